output "address" {
  description = "Host name of the database (resolves to the current primary after a failover)."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "PostgreSQL port."
  value       = aws_db_instance.this.port
}

output "db_name" {
  description = "Database name."
  value       = aws_db_instance.this.db_name
}

output "master_username" {
  description = "Master user name (not secret; the password lives only in the Secrets Manager secret)."
  value       = aws_db_instance.this.username
}

output "master_user_secret_arn" {
  description = "ARN of the Secrets Manager secret RDS manages (JSON with `username` and `password`, rotated by RDS). The Kubernetes overlay's ExternalSecret builds DATABASE_URL from it."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "kms_key_arn" {
  description = "KMS key of the database storage and its secret (readers of the secret need kms:Decrypt on it)."
  value       = module.key.arn
}

output "database_url_template" {
  description = "DATABASE_URL for the app as an External Secrets template: the secret's username and password fill the placeholders (URL-encoded). TLS with the server verified (verify-full) against the RDS CA bundle the Kubernetes component database-rds mounts at /etc/rds-ca/ (docs/terraform.md)."
  value       = "postgresql+psycopg://{{ .username | urlquery }}:{{ .password | urlquery }}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/${aws_db_instance.this.db_name}?sslmode=verify-full&sslrootcert=/etc/rds-ca/rds-ca-bundle.pem"
}

output "security_group_id" {
  description = "Security group of the database."
  value       = aws_security_group.db.id
}
