output "bucket" {
  description = "State bucket name (backend `bucket`)."
  value       = aws_s3_bucket.state.bucket
}

output "bucket_arn" {
  description = "State bucket ARN."
  value       = aws_s3_bucket.state.arn
}

output "kms_key_arn" {
  description = "KMS key encrypting the state (backend `kms_key_id`)."
  value       = module.key.arn
}

output "log_bucket" {
  description = "Bucket receiving the state bucket's access logs."
  value       = aws_s3_bucket.logs.bucket
}
