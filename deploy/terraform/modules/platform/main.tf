# One environment of the platform: network, EKS cluster, RDS database, the registry the
# environment pushes to, the service-account role that reads the database secret and the
# GitHub Actions role. environments/{staging,production} call it with their values; what
# differs between them is in the variables, nothing else.
locals {
  name = "comments-api-${var.environment}"
  tags = {
    Project     = "comments-api"
    Environment = var.environment
    ManagedBy   = "terraform"
    Repository  = var.github_repository
    Owner       = var.owner
  }
  ecr_prefix = "arn:aws:ecr:${var.region}:${var.aws_account_id}:repository"
  # ARNs built from known names rather than read from the resources, so the CI role's
  # policy is complete, and reviewable, in the plan (a pulled registry may belong to
  # another root anyway).
  push_repository_arn  = "${local.ecr_prefix}/${var.repository.name}"
  pull_repository_arns = [for r in var.pull_repository_names : "${local.ecr_prefix}/${r}"]
  pull_repository_urls = [for r in var.pull_repository_names : "${var.aws_account_id}.dkr.ecr.${var.region}.amazonaws.com/${r}"]
  cluster_arn          = "arn:aws:eks:${var.region}:${var.aws_account_id}:cluster/${local.name}"
  deploy_cluster = {
    name       = module.cluster.cluster_name
    arn        = local.cluster_arn
    namespaces = [var.app_namespace]
  }
}

module "network" {
  source             = "../network"
  name               = local.name
  aws_account_id     = var.aws_account_id
  region             = var.region
  availability_zones = var.availability_zones
  vpc_cidr           = var.vpc_cidr
  single_nat_gateway = var.single_nat_gateway
  cluster_name       = local.name
  tags               = local.tags
}

module "cluster" {
  source              = "../cluster"
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

  node_ami_release_version = var.node_ami_release_version

  load_balancer_controller_policy_json = var.load_balancer_controller_policy_json

  tags = local.tags
}

module "database" {
  source                  = "../database"
  name                    = local.name
  aws_account_id          = var.aws_account_id
  region                  = var.region
  vpc_id                  = module.network.vpc_id
  subnet_ids              = module.network.private_subnet_ids
  allowed_security_groups = { eks = module.cluster.cluster_security_group_id }
  instance_class          = var.db_instance_class
  multi_az                = true
  backup_retention_days   = var.db_backup_retention_days
  deletion_protection     = var.deletion_protection
  final_snapshot          = var.final_snapshot
  tags                    = local.tags
}

module "registries" {
  source         = "../registries"
  name           = local.name
  aws_account_id = var.aws_account_id
  repositories = {
    (var.repository.name) = {
      keep_images = var.repository.keep_images
    }
  }
  tags = local.tags
}

# The ExternalSecret of the environment's overlay reads the database secret with this role.
module "secrets_reader" {
  source            = "../workload-role"
  name              = "${local.name}-secrets-reader"
  oidc_provider_arn = module.cluster.oidc_provider_arn
  oidc_issuer_url   = module.cluster.oidc_issuer_url
  namespace         = var.app_namespace
  service_account   = "comments-api-secrets"
  secret_arns       = [module.database.master_user_secret_arn]
  kms_key_arns      = [module.database.kms_key_arn]
  tags              = local.tags
}

# Jobs of the GitHub environment named like this one, plus pushes to github_branches.
# With separate_deploy_role this role only pushes (the build, and the signature cosign
# writes next to the image) and trusts only ci_push_environment: a job of the branch
# outside that environment (E2E runs test code) gets a token whose subject is the
# branch's, which only ci_deploy trusts, so it cannot assume this role by its ARN.
module "ci" {
  source               = "../ci-identity"
  name                 = "comments-api-ci-${var.environment}"
  aws_account_id       = var.aws_account_id
  github_repository    = var.github_repository
  github_environment   = var.separate_deploy_role ? var.ci_push_environment : var.environment
  github_branches      = var.separate_deploy_role ? [] : var.github_branches
  push_repository_arns = [local.push_repository_arn]
  pull_repository_arns = local.pull_repository_arns
  deploy_cluster       = var.separate_deploy_role ? null : local.deploy_cluster
  tags                 = local.tags
}

# The environment's and the branches' subjects, no push right: a test step of the E2E
# job (or any job that reads images, their scan findings, or deploys) cannot put an
# image or a signature into a registry under this role.
module "ci_deploy" {
  source               = "../ci-identity"
  count                = var.separate_deploy_role ? 1 : 0
  name                 = "comments-api-ci-${var.environment}-deploy"
  aws_account_id       = var.aws_account_id
  github_repository    = var.github_repository
  github_environment   = var.environment
  github_branches      = var.github_branches
  pull_repository_arns = concat([local.push_repository_arn], local.pull_repository_arns)
  deploy_cluster       = local.deploy_cluster
  tags                 = local.tags
}
