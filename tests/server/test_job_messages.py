from __future__ import annotations

from raydeck.server.services.jobs import summarize_message


def test_failed_job_message_is_one_line_with_the_exception() -> None:
    ray_message = (
        "Job entrypoint command failed with exit code 1, last available logs "
        "(truncated to 20,000 chars):\nTraceback (most recent call last):\n"
        '  File "t.py", line 1, in <module>\n    import ray\n'
        "ModuleNotFoundError: No module named 'ray'\n"
    )
    assert summarize_message(ray_message) == (
        "Job entrypoint command failed with exit code 1: ModuleNotFoundError: No module named 'ray'"
    )


def test_simple_messages_pass_through() -> None:
    assert summarize_message("Job finished successfully.") == "Job finished successfully."
    assert summarize_message(None) is None
