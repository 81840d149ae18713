# Staging: the same shape as production (three zones, three nodes, Multi-AZ database),
# cheaper where an outage only costs us time: one NAT gateway, smaller sizes, a
# database that can be torn down without a snapshot. The `dev` branch builds push
# here; the `staging` GitHub environment deploys here.
locals {
  environment = "staging"
  name        = "comments-api-${local.environment}"
  tags = {
    Project     = "comments-api"
    Environment = local.environment
    ManagedBy   = "terraform"
    Repository  = var.github_repository
    Owner       = var.owner
  }
  dev_repository = "comments-api/dev"
  # ARNs built from known names rather than read from the resources, so the CI role's
  # policy is complete, and reviewable, in the plan.
  dev_repository_arn = "arn:aws:ecr:${var.region}:${var.aws_account_id}:repository/${local.dev_repository}"
  cluster_arn        = "arn:aws:eks:${var.region}:${var.aws_account_id}:cluster/${local.name}"
}

module "network" {
  source             = "../../modules/network"
  name               = local.name
  aws_account_id     = var.aws_account_id
  region             = var.region
  availability_zones = var.availability_zones
  vpc_cidr           = var.vpc_cidr
  single_nat_gateway = true
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
  # Staging data is disposable: it can be destroyed without a snapshot.
  deletion_protection = false
  final_snapshot      = false
  tags                = local.tags
}

module "registries" {
  source         = "../../modules/registries"
  name           = local.name
  aws_account_id = var.aws_account_id
  repositories = {
    (local.dev_repository) = { keep_images = 100, untagged_days = 3 }
  }
  tags = local.tags
}

# The ExternalSecret of the staging overlay reads the database secret with this role.
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

# `dev` branch builds push to the dev registry; the `staging` environment deploys.
module "ci" {
  source               = "../../modules/ci-identity"
  name                 = "comments-api-ci-${local.environment}"
  aws_account_id       = var.aws_account_id
  github_repository    = var.github_repository
  github_environment   = local.environment
  github_branches      = ["dev"]
  push_repository_arns = [local.dev_repository_arn]
  deploy_cluster = {
    name       = module.cluster.cluster_name
    arn        = local.cluster_arn
    namespaces = [var.app_namespace]
  }
  tags = local.tags
}
