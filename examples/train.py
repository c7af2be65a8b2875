"""The quickstart's job: runs one task on a worker of the pool with the `accel` resource."""

import socket

import ray

ray.init()  # inside a Raydeck job: the job's own cluster


@ray.remote(resources={"accel": 1})
def where() -> str:
    return socket.gethostname()


print(f"a task ran on a worker of the accel pool ({ray.get(where.remote())})")
print(f"cluster resources: {ray.cluster_resources()}")
