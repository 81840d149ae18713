# Bootstrap keeps its own (small) state locally: it creates the bucket the other roots
# keep theirs in. Store terraform.tfstate somewhere safe, or migrate it into the bucket
# afterwards (docs/terraform.md).
terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}

provider "aws" {
  region              = var.region
  allowed_account_ids = [var.aws_account_id]
  default_tags {
    tags = local.tags
  }
}
