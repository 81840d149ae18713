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

output "prevent_destroy" {
  description = "Whether a plan destroying or replacing the key is refused (terraform_data.keep_key)."
  value       = length(terraform_data.keep_key) == 1
}
