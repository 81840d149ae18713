# Offline unit tests of the composition module (mocked provider: no AWS call). The real
# plans of both environments are asserted by tests/terraform/test_plan.py; these check
# that the environment's choices reach the modules and that production's are enforced.
mock_provider "aws" {}

variables {
  environment              = "staging"
  aws_account_id           = "123456789012"
  github_repository        = "example/comments-api"
  region                   = "eu-west-1"
  availability_zones       = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
  vpc_cidr                 = "10.40.0.0/16"
  cluster_api_public_cidrs = ["203.0.113.0/24"]
  node_instance_types      = ["t3.large"]
  nodes_per_zone           = { min = 1, desired = 1, max = 2 }
  db_instance_class        = "db.t4g.medium"
  db_backup_retention_days = 7
  single_nat_gateway       = true
  deletion_protection      = false
  final_snapshot           = false
  repository               = { name = "comments-api/dev", keep_images = 100 }
  pull_repository_names    = []
  app_namespace            = "comments-staging"
  github_branches          = ["dev"]
}

run "wires_the_environment" {
  command = plan

  assert {
    condition     = output.name == "comments-api-staging" && output.tags.Environment == "staging"
    error_message = "names and tags follow the environment"
  }
  assert {
    condition     = output.kubeconfig_command == "aws eks update-kubeconfig --region eu-west-1 --name comments-api-staging --alias comments-api-staging"
    error_message = "kubeconfig command of this cluster"
  }
  assert {
    condition     = length(output.pull_repository_urls) == 0
    error_message = "staging reads no other registry"
  }
}

# Staging's E2E job must not be able to push (it could overwrite what gets promoted):
# the role it assumes has no write action, and the push role does not trust its token.
run "staging_splits_the_push_role_from_the_deploy_role" {
  command = plan
  variables {
    separate_deploy_role = true
    ci_push_environment  = "dev-push"
  }

  assert {
    condition = length(setintersection(
      flatten([for s in jsondecode(module.ci_deploy[0].policy).Statement : s.Action]),
      ["ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:BatchDeleteImage"],
    )) == 0
    error_message = "the deploy role cannot push"
  }
  assert {
    condition = toset(flatten([for s in jsondecode(module.ci_deploy[0].policy).Statement : s.Resource if s.Sid == "ReadImages"])) == toset(["arn:aws:ecr:eu-west-1:123456789012:repository/comments-api/dev"]) && contains(
      flatten([for s in jsondecode(module.ci_deploy[0].policy).Statement : s.Action if s.Sid == "ReadImages"]), "ecr:DescribeImageScanFindings"
    )
    error_message = "the deploy role pulls the dev registry and reads its scan findings (the scan gate)"
  }
  # A job of `dev` outside the push environment (E2E) carries ref:refs/heads/dev: the
  # push role must not trust it, or any such job could assume the push role by its ARN.
  assert {
    condition     = module.ci.trusted_subjects == ["repo:example/comments-api:environment:dev-push"] && output.ci_trusted_subjects == module.ci.trusted_subjects
    error_message = "the push role trusts the push environment's subject, and no branch or other environment"
  }
  assert {
    condition     = module.ci_deploy[0].trusted_subjects == ["repo:example/comments-api:environment:staging", "repo:example/comments-api:ref:refs/heads/dev"] && output.ci_deploy_trusted_subjects == module.ci_deploy[0].trusted_subjects
    error_message = "the deploy role trusts the dev branch (E2E, scan) and the staging environment, not the push environment"
  }
  assert {
    condition     = module.ci_deploy[0].deploy_cluster_name == "comments-api-staging" && module.ci.deploy_cluster_name == null
    error_message = "the deploy role, not the push role, deploys to the cluster"
  }
  assert {
    condition     = module.ci_deploy[0].role_name == "comments-api-ci-staging-deploy" && module.ci.role_name == "comments-api-ci-staging"
    error_message = "a second role beside the push role (ARNs are known after apply: output ci_deploy_role_arn)"
  }
}

run "one_role_without_the_split" {
  command = plan

  assert {
    condition     = length(module.ci_deploy) == 0 && output.ci_deploy_role_arn == null && output.ci_deploy_trusted_subjects == null && module.ci.deploy_cluster_name == "comments-api-staging"
    error_message = "production's single job promotes and deploys with one role"
  }
  assert {
    condition     = module.ci.trusted_subjects == ["repo:example/comments-api:environment:staging", "repo:example/comments-api:ref:refs/heads/dev"]
    error_message = "one role trusts the environment and the branches"
  }
}

# The AWS Load Balancer Controller's role, from the policy the operator passes in: the
# Helm values carry its service account and ARN, so `helm install -f` needs no --set.
run "load_balancer_controller_values_name_its_role" {
  command = plan
  variables {
    load_balancer_controller_policy_json = jsonencode({
      Version   = "2012-10-17"
      Statement = [{ Effect = "Allow", Action = ["ec2:DescribeVpcs", "elasticloadbalancing:DescribeLoadBalancers"], Resource = "*" }]
    })
  }
  # The role's ARN exists after the apply only; a known one lets the values be compared.
  override_resource {
    target          = module.cluster.aws_iam_role.load_balancer_controller
    values          = { arn = "arn:aws:iam::123456789012:role/comments-api-staging-lb-controller" }
    override_during = plan
  }

  assert {
    condition = output.aws_load_balancer_controller_values.serviceAccount == {
      name        = "aws-load-balancer-controller"
      annotations = { "eks.amazonaws.com/role-arn" = "arn:aws:iam::123456789012:role/comments-api-staging-lb-controller" }
    }
    error_message = "the Helm values name the controller's service account and annotate it with the role"
  }
  assert {
    condition     = output.aws_load_balancer_controller_values.clusterName == "comments-api-staging" && output.aws_load_balancer_controller_values.region == "eu-west-1"
    error_message = "cluster and region stay in the values beside the service account"
  }
  # Null unless the policy reached the cluster module and it created the role.
  assert {
    condition     = output.load_balancer_controller_role_arn == "arn:aws:iam::123456789012:role/comments-api-staging-lb-controller"
    error_message = "the role ARN is an output of its own too"
  }
}

run "no_load_balancer_controller_role_by_default" {
  command = plan

  assert {
    condition     = !contains(keys(output.aws_load_balancer_controller_values), "serviceAccount") && output.load_balancer_controller_role_arn == null
    error_message = "without the controller's policy: no role, and the values say nothing about its service account"
  }
}

# The split without a push environment would leave the push role trusting the branch
# subject every job of `dev` gets.
run "rejects_the_split_without_a_push_environment" {
  command = plan
  variables {
    separate_deploy_role = true
  }
  expect_failures = [var.ci_push_environment]
}

run "rejects_a_push_environment_without_the_split" {
  command = plan
  variables {
    ci_push_environment = "dev-push"
  }
  expect_failures = [var.ci_push_environment]
}

# GitHub environment names are case-insensitive: "Staging" is the environment the
# deploy role trusts.
run "rejects_the_deploy_environment_as_push_environment" {
  command = plan
  variables {
    separate_deploy_role = true
    ci_push_environment  = "Staging"
  }
  expect_failures = [var.ci_push_environment]
}

run "rejects_a_wildcard_push_environment" {
  command = plan
  variables {
    separate_deploy_role = true
    ci_push_environment  = "dev-*"
  }
  expect_failures = [var.ci_push_environment]
}

run "production_reads_the_dev_registry" {
  command = plan
  variables {
    environment           = "production"
    single_nat_gateway    = false
    deletion_protection   = true
    final_snapshot        = true
    repository            = { name = "comments-api/prod", keep_images = 200 }
    pull_repository_names = ["comments-api/dev"]
    github_branches       = []
  }

  assert {
    condition     = output.pull_repository_urls == ["123456789012.dkr.ecr.eu-west-1.amazonaws.com/comments-api/dev"]
    error_message = "the promotion source URL"
  }
}

run "production_keeps_its_protection" {
  command = plan
  variables {
    environment     = "production"
    github_branches = ["dev"]
  }
  expect_failures = [
    var.single_nat_gateway,
    var.deletion_protection,
    var.final_snapshot,
    var.github_branches,
  ]
}

run "rejects_an_unknown_environment" {
  command = plan
  variables {
    environment = "qa"
  }
  expect_failures = [var.environment]
}

run "rejects_a_wildcard_pull_repository" {
  command = plan
  variables {
    pull_repository_names = ["*"]
  }
  expect_failures = [var.pull_repository_names]
}

run "rejects_zones_of_another_region" {
  command = plan
  variables {
    availability_zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
  }
  expect_failures = [var.availability_zones]
}

run "rejects_host_bits_in_the_vpc_range" {
  command = plan
  variables {
    vpc_cidr = "10.40.1.0/16"
  }
  expect_failures = [var.vpc_cidr]
}

run "rejects_an_ipv6_vpc_range" {
  command = plan
  variables {
    vpc_cidr = "fd00::/16"
  }
  expect_failures = [var.vpc_cidr]
}

run "rejects_a_vpc_range_too_small_for_the_subnets" {
  command = plan
  variables {
    vpc_cidr = "10.40.0.0/24"
  }
  expect_failures = [var.vpc_cidr]
}
