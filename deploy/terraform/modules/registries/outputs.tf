output "repository_urls" {
  description = "Repository URL by name (ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME): the image reference of the Kubernetes overlays, pinned by digest."
  value       = { for n, r in aws_ecr_repository.this : n => r.repository_url }
}

output "repository_arns" {
  description = "Repository ARN by name (for IAM policies)."
  value       = { for n, r in aws_ecr_repository.this : n => r.arn }
}

output "kms_key_arn" {
  description = "KMS key encrypting the images."
  value       = module.key.arn
}
