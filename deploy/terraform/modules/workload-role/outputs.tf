output "role_arn" {
  description = "Role ARN for the service account annotation eks.amazonaws.com/role-arn."
  value       = aws_iam_role.this.arn
}
