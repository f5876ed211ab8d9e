"""AWS adapters: the only modules that talk to SQS, S3 and DynamoDB, and the Lambda glue
(Function URL events, Powertools and its batch driver)."""
