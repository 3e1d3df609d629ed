"""hybrid-local: the whole cloud side on one machine, for laptops, tests and docker-compose.

moto's server provisioned like the SAM stack (`cloud`, `provision`), the Lambda emulator around
the real handler (`emulator/`, `serve`), the supervised demo and the workload grader. Never
deployed: the function image and the VM install carry none of it.
"""
