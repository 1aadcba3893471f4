-- wrk script for the "post 1 KiB" workload of benchmarks/run.py: POST /echo with a 1 KiB body.
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
