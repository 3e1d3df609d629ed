"""The AWS Lambda function: video in, recognised people out."""
