# One-time, per AWS account: the state backend and the GitHub Actions OIDC identity
# provider that every environment's CI role trusts.
locals {
  tags = {
    Project   = "comments-api"
    Component = "terraform-state"
    ManagedBy = "terraform"
    Owner     = var.owner
  }
  bucket = var.state_bucket_name != "" ? var.state_bucket_name : "comments-api-tfstate-${var.aws_account_id}"
}

module "state" {
  source         = "../modules/state-backend"
  bucket_name    = local.bucket
  aws_account_id = var.aws_account_id
  tags           = local.tags
}

# GitHub's OIDC issuer. AWS validates its certificate against trusted CAs, so no
# thumbprint is pinned here.
resource "aws_iam_openid_connect_provider" "github" {
  count          = var.create_github_oidc_provider ? 1 : 0
  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
  tags           = local.tags
}
