# Staging: the same shape as production (three zones, three nodes, Multi-AZ database),
# cheaper where an outage only costs us time: one NAT gateway, smaller sizes, a
# database that can be torn down without a snapshot. The `dev` branch builds push
# here (from the `dev-push` GitHub environment); the `staging` GitHub environment
# deploys here.
# modules/platform holds the wiring; these are staging's values.
module "platform" {
  source                   = "../../modules/platform"
  environment              = "staging"
  aws_account_id           = var.aws_account_id
  github_repository        = var.github_repository
  region                   = var.region
  availability_zones       = var.availability_zones
  cluster_api_public_cidrs = var.cluster_api_public_cidrs
  admin_role_arns          = var.admin_role_arns
  node_ami_release_version = var.node_ami_release_version

  load_balancer_controller_policy_json = var.load_balancer_controller_policy_json

  vpc_cidr           = "10.40.0.0/16"
  single_nat_gateway = true

  node_instance_types = ["t3.large"]
  nodes_per_zone      = { min = 1, desired = 1, max = 2 }

  db_instance_class        = "db.t4g.medium"
  db_backup_retention_days = 7
  # Staging data is disposable: a destroy leaves no snapshot, no automated backups and
  # no KMS key behind (docs/terraform.md, section 3).
  deletion_protection = false
  final_snapshot      = false

  repository = { name = "comments-api/dev", keep_images = 400 } # manifests: 100 releases of up to 4 (docs/terraform.md)

  # The namespace of deploy/k8s/overlays/staging; the CI role may deploy only there.
  app_namespace = "comments-staging"
  # Jobs of the `dev` branch outside any environment (dev.yml's E2E and scan gate) and of
  # the `staging` environment assume ci_deploy_role_arn, which cannot push.
  github_branches = ["dev"]
  # The build and sign jobs push with ci_role_arn, which trusts only jobs of the
  # `dev-push` GitHub Environment: a job of `dev` that does not name it (E2E runs test
  # code) cannot assume the push role. The environment must admit the `dev` branch only
  # (repository settings, docs/terraform.md section 2).
  separate_deploy_role = true
  ci_push_environment  = "dev-push"
}
