output "arn" {
  description = "The key's ARN."
  value       = aws_kms_key.this.arn
}

output "key_id" {
  description = "The key's id."
  value       = aws_kms_key.this.key_id
}

output "alias" {
  description = "The key's alias name (alias/...)."
  value       = aws_kms_alias.this.name
}
