terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
  # Partial configuration: `terraform init -backend-config=backend.hcl` (docs/terraform.md).
  backend "s3" {}
}

provider "aws" {
  region              = var.region
  allowed_account_ids = [var.aws_account_id]
  # Tags on everything this provider creates; modules add the same set explicitly too.
  default_tags {
    tags = module.platform.tags
  }
}
