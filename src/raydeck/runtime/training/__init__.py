"""Code that runs inside Ray for CustomJobs and tuning trials (see ``launcher``)."""
