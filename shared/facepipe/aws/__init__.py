"""AWS adapters: the only modules that talk to SQS and S3."""
