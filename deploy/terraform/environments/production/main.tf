# Production: three zones with a NAT gateway each, one node group per zone, a Multi-AZ
# database with deletion protection and a final snapshot, an immutable prod registry
# that only receives digests promoted from the dev registry, and a CI role only the
# `production` GitHub environment (restricted to the `main` branch) can assume.
locals {
  environment = "production"
  name        = "comments-api-${local.environment}"
  tags = {
    Project     = "comments-api"
    Environment = local.environment
    ManagedBy   = "terraform"
    Repository  = var.github_repository
    Owner       = var.owner
  }
  prod_repository = "comments-api/prod"
  # ARNs built from known names rather than read from the resources, so the CI role's
  # policy is complete, and reviewable, in the plan (the dev registry belongs to the
  # staging root anyway).
  prod_repository_arn = "arn:aws:ecr:${var.region}:${var.aws_account_id}:repository/${local.prod_repository}"
  cluster_arn         = "arn:aws:eks:${var.region}:${var.aws_account_id}:cluster/${local.name}"
  dev_repository_arn  = "arn:aws:ecr:${var.region}:${var.aws_account_id}:repository/${var.dev_repository_name}"
  dev_repository_url  = "${var.aws_account_id}.dkr.ecr.${var.region}.amazonaws.com/${var.dev_repository_name}"
}

module "network" {
  source             = "../../modules/network"
  name               = local.name
  aws_account_id     = var.aws_account_id
  region             = var.region
  availability_zones = var.availability_zones
  vpc_cidr           = var.vpc_cidr
  single_nat_gateway = false
  cluster_name       = local.name
  tags               = local.tags
}

module "cluster" {
  source              = "../../modules/cluster"
  name                = local.name
  aws_account_id      = var.aws_account_id
  region              = var.region
  kubernetes_version  = var.kubernetes_version
  vpc_id              = module.network.vpc_id
  subnet_ids_by_zone  = module.network.private_subnet_ids_by_zone
  api_public_cidrs    = var.cluster_api_public_cidrs
  node_instance_types = var.node_instance_types
  nodes_per_zone      = var.nodes_per_zone
  admin_role_arns     = var.admin_role_arns
  tags                = local.tags
}

module "database" {
  source                  = "../../modules/database"
  name                    = local.name
  aws_account_id          = var.aws_account_id
  region                  = var.region
  vpc_id                  = module.network.vpc_id
  subnet_ids              = module.network.private_subnet_ids
  allowed_security_groups = { eks = module.cluster.cluster_security_group_id }
  instance_class          = var.db_instance_class
  multi_az                = true
  backup_retention_days   = var.db_backup_retention_days
  deletion_protection     = true
  final_snapshot          = true
  tags                    = local.tags
}

module "registries" {
  source         = "../../modules/registries"
  name           = local.name
  aws_account_id = var.aws_account_id
  repositories = {
    # Deep enough to roll back well past any release still in a GitHub deployment log.
    (local.prod_repository) = { keep_images = 200, untagged_days = 14 }
  }
  tags = local.tags
}

module "secrets_reader" {
  source            = "../../modules/workload-role"
  name              = "${local.name}-secrets-reader"
  oidc_provider_arn = module.cluster.oidc_provider_arn
  oidc_issuer_url   = module.cluster.oidc_issuer_url
  namespace         = var.app_namespace
  service_account   = "comments-api-secrets"
  secret_arns       = [module.database.master_user_secret_arn]
  kms_key_arns      = [module.database.kms_key_arn]
  tags              = local.tags
}

# Only jobs of the `production` GitHub environment: no branch subject at all, so a push
# to any branch (dev included) cannot reach production; the environment itself admits
# only `main` (deployment branch policy, docs/terraform.md).
module "ci" {
  source               = "../../modules/ci-identity"
  name                 = "comments-api-ci-${local.environment}"
  aws_account_id       = var.aws_account_id
  github_repository    = var.github_repository
  github_environment   = local.environment
  github_branches      = []
  push_repository_arns = [local.prod_repository_arn]
  pull_repository_arns = [local.dev_repository_arn]
  deploy_cluster = {
    name       = module.cluster.cluster_name
    arn        = local.cluster_arn
    namespaces = [var.app_namespace]
  }
  tags = local.tags
}
