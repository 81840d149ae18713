# The S3 bucket every environment keeps its state in: versioned (undo a bad apply),
# encrypted with a customer key, never public, TLS only, with an access log. Locking is
# S3's own conditional-write lock file (backend `use_lockfile = true`, Terraform >= 1.10),
# so no DynamoDB table is needed.
module "key" {
  source         = "../kms-key"
  alias          = var.bucket_name
  description    = "Terraform state (${var.bucket_name})"
  aws_account_id = var.aws_account_id
  # Every state object is encrypted with it: like the bucket, it is never destroyed.
  prevent_destroy = true
  tags            = merge(var.tags, { Name = "${var.bucket_name}-state" })
}

moved {
  from = aws_kms_key.state
  to   = module.key.aws_kms_key.this
}

moved {
  from = aws_kms_alias.state
  to   = module.key.aws_kms_alias.this
}

resource "aws_s3_bucket" "state" {
  bucket = var.bucket_name
  tags   = merge(var.tags, { Name = var.bucket_name })
  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_s3_bucket" "logs" {
  bucket = "${var.bucket_name}-logs"
  tags   = merge(var.tags, { Name = "${var.bucket_name}-logs" })
}

locals {
  buckets = { state = aws_s3_bucket.state, logs = aws_s3_bucket.logs }
  # Built from the name (known at plan time) so the policies can be reviewed in the plan.
  state_arn = "arn:aws:s3:::${var.bucket_name}"
  logs_arn  = "arn:aws:s3:::${var.bucket_name}-logs"
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.buckets
  bucket   = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = module.key.arn
    }
    bucket_key_enabled = true
  }
}

# S3 server access logs can only be delivered to SSE-S3 buckets.
resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = local.buckets
  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets
  bucket   = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_logging" "state" {
  bucket        = aws_s3_bucket.state.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "s3-access/"
}

resource "aws_s3_bucket_lifecycle_configuration" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    id     = "expire-old-state-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = 365
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

# The bucket's default encryption applies only to a PutObject that names none, and the S3
# backend always names one: with `encrypt = true` but no `kms_key_id` it asks for AES256
# (SSE-S3), so every state and lock file would be written past the customer key. Such
# writes are refused instead, as is aws:kms without a key ID (the AWS managed aws/s3 key):
# the backend must name the state key (backend.hcl `kms_key_id`).
resource "aws_s3_bucket_policy" "state" {
  bucket = aws_s3_bucket.state.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [local.state_arn, "${local.state_arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
      {
        Sid       = "DenyWritesNotUnderKMS"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = "${local.state_arn}/*"
        Condition = {
          StringNotEquals = { "s3:x-amz-server-side-encryption" = "aws:kms" }
          Null            = { "s3:x-amz-server-side-encryption" = "false" }
        }
      },
      {
        Sid       = "DenyWritesUnderTheAWSManagedKey"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = "${local.state_arn}/*"
        Condition = {
          StringEquals = { "s3:x-amz-server-side-encryption" = "aws:kms" }
          Null         = { "s3:x-amz-server-side-encryption-aws-kms-key-id" = "true" }
        }
      },
    ]
  })
  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [local.logs_arn, "${local.logs_arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
      {
        Sid       = "S3ServerAccessLogs"
        Effect    = "Allow"
        Principal = { Service = "logging.s3.amazonaws.com" }
        Action    = "s3:PutObject"
        Resource  = "${local.logs_arn}/s3-access/*"
        Condition = {
          ArnLike      = { "aws:SourceArn" = local.state_arn }
          StringEquals = { "aws:SourceAccount" = var.aws_account_id }
        }
      },
    ]
  })
  depends_on = [aws_s3_bucket_public_access_block.this]
}
