"""The Lambda service, locally: SQS event source, Invoke API and execution environments.

Runs the function's real handler (imported by name, `lambda_fn.handler.handler`) in worker
processes that are created, reused and reaped the way Lambda treats execution environments.
"""
