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
