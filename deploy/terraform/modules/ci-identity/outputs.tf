output "role_arn" {
  description = "ARN to put in the workflow's aws-actions/configure-aws-credentials `role-to-assume` (the GitHub environment's AWS_ROLE_ARN variable)."
  value       = aws_iam_role.ci.arn
}

output "role_name" {
  description = "Name of the CI role."
  value       = aws_iam_role.ci.name
}

output "trusted_subjects" {
  description = "Exact OIDC token subjects the role trusts."
  value       = local.subjects
}
