# Production: three zones with a NAT gateway each, one node group per zone, a Multi-AZ
# database with deletion protection and a final snapshot, an immutable prod registry
# that only receives digests promoted from the dev registry, and a CI role only the
# `production` GitHub environment (restricted to the `main` branch) can assume.
# modules/platform holds the wiring; these are production's values.
module "platform" {
  source                   = "../../modules/platform"
  environment              = "production"
  aws_account_id           = var.aws_account_id
  github_repository        = var.github_repository
  region                   = var.region
  availability_zones       = var.availability_zones
  cluster_api_public_cidrs = var.cluster_api_public_cidrs
  admin_role_arns          = var.admin_role_arns
  node_ami_release_version = var.node_ami_release_version

  load_balancer_controller_policy_json = var.load_balancer_controller_policy_json

  vpc_cidr           = "10.50.0.0/16"
  single_nat_gateway = false

  node_instance_types = ["m6i.large"]
  nodes_per_zone      = { min = 1, desired = 1, max = 3 }

  db_instance_class        = "db.m6g.large"
  db_backup_retention_days = 14
  deletion_protection      = true
  final_snapshot           = true

  # Deep enough to roll back well past any release still in a GitHub deployment log.
  repository = { name = "comments-api/prod", keep_images = 800 } # manifests: 200 releases of up to 4 (docs/terraform.md)
  # The dev registry (created by staging) the promotion copies tested digests from.
  pull_repository_names = ["comments-api/dev"]

  # The namespace of deploy/k8s/overlays/production; the CI role may deploy only there.
  app_namespace = "comments-production"
  # Only jobs of the `production` GitHub environment: no branch subject at all, so a push
  # to any branch (dev included) cannot reach production; the environment itself admits
  # only `main` (deployment branch policy, docs/terraform.md).
  github_branches = []
}
