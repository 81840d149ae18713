# A customer-managed KMS key, as every module here needs one: yearly rotation, a 30-day
# deletion window, administered by the account (IAM policies grant its use), and, for a
# key that encrypts CloudWatch log groups, use by the Logs service limited to those
# groups. One definition, so the modules' keys cannot drift apart.
locals {
  account_administration = {
    Sid       = "AccountAdministration"
    Effect    = "Allow"
    Principal = { AWS = "arn:aws:iam::${var.aws_account_id}:root" }
    Action    = "kms:*"
    Resource  = "*"
  }
  cloudwatch_logs_use = var.log_group_arn_pattern == "" ? [] : [{
    Sid       = "CloudWatchLogsUse"
    Effect    = "Allow"
    Principal = { Service = "logs.${var.region}.amazonaws.com" }
    Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    Resource  = "*"
    Condition = { ArnLike = { "kms:EncryptionContext:aws:logs:arn" = var.log_group_arn_pattern } }
  }]
}

resource "aws_kms_key" "this" {
  description             = var.description
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = concat([local.account_administration], local.cloudwatch_logs_use)
  })
  tags = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.alias}"
  target_key_id = aws_kms_key.this.key_id
}

# prevent_destroy must be a literal, so a key that must outlive its stack (it encrypts a
# database's final snapshot and retained backups, or the Terraform state) gets this guard
# instead: a plan that would destroy or replace the key destroys the guard too, and
# Terraform refuses that plan. Without it `terraform destroy` schedules the key for
# deletion in the same run that takes the final snapshot: a key pending deletion cannot
# decrypt at all, and after the 30-day window the snapshot is lost for good. To tear such
# a stack down, first `terraform state rm` the key and this guard (docs/terraform.md).
resource "terraform_data" "keep_key" {
  count            = var.prevent_destroy ? 1 : 0
  triggers_replace = aws_kms_key.this.arn
  lifecycle {
    prevent_destroy = true
  }
}
