# Offline unit tests of the CI identity module (mocked provider: no AWS call).
mock_provider "aws" {
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/comments-api-ci-test" }
  }
}

variables {
  name                 = "comments-api-ci-test"
  aws_account_id       = "123456789012"
  github_repository    = "example/comments-api"
  github_environment   = "production"
  push_repository_arns = ["arn:aws:ecr:eu-west-1:123456789012:repository/comments-api/prod"]
  pull_repository_arns = ["arn:aws:ecr:eu-west-1:123456789012:repository/comments-api/dev"]
  deploy_cluster = {
    name       = "comments-api-production"
    arn        = "arn:aws:eks:eu-west-1:123456789012:cluster/comments-api-production"
    namespaces = ["comments-api"]
  }
}

run "environment_only_trust" {
  command = plan

  assert {
    condition     = jsondecode(aws_iam_role.ci.assume_role_policy).Statement[0].Condition.StringEquals["token.actions.githubusercontent.com:sub"] == ["repo:example/comments-api:environment:production"]
    error_message = "only the production environment of this repository"
  }
  assert {
    condition     = jsondecode(aws_iam_role.ci.assume_role_policy).Statement[0].Condition.StringEquals["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    error_message = "audience pinned"
  }
  assert {
    condition     = keys(jsondecode(aws_iam_role.ci.assume_role_policy).Statement[0].Condition) == ["StringEquals"]
    error_message = "exact matches only (no StringLike wildcards)"
  }
  assert {
    condition     = jsondecode(aws_iam_role.ci.assume_role_policy).Statement[0].Principal.Federated == "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    error_message = "GitHub's OIDC provider"
  }
  assert {
    condition     = [for s in jsondecode(aws_iam_role_policy.ci.policy).Statement : s.Resource if s.Sid == "PushImages"] == [["arn:aws:ecr:eu-west-1:123456789012:repository/comments-api/prod"]]
    error_message = "push only to the listed registry"
  }
  assert {
    condition     = !contains(flatten([for s in jsondecode(aws_iam_role_policy.ci.policy).Statement : s.Action if s.Sid == "ReadImages"]), "ecr:PutImage")
    error_message = "the promotion source is read-only"
  }
  assert {
    condition     = aws_eks_access_policy_association.deploy[0].access_scope[0].type == "namespace" && aws_eks_access_policy_association.deploy[0].access_scope[0].namespaces == toset(["comments-api"])
    error_message = "deploy rights are namespace-scoped"
  }
}

# AmazonEKSAdminPolicy covers the built-in kinds only: the overlay's custom resources and
# its Namespace need the RBAC of deploy/k8s/cluster-rbac, bound to this group.
run "deploy_entry_puts_the_role_in_the_rbac_group" {
  command = plan

  assert {
    condition     = aws_eks_access_entry.deploy[0].kubernetes_groups == toset(["comments-api-deployers"])
    error_message = "the access entry carries the group deploy/k8s/cluster-rbac binds"
  }
  assert {
    condition     = output.rbac_group == "comments-api-deployers"
    error_message = "the group is an output"
  }
  assert {
    condition     = aws_eks_access_policy_association.deploy[0].policy_arn == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSAdminPolicy" && aws_eks_access_policy_association.deploy[0].access_scope[0].type == "namespace"
    error_message = "the built-in kinds still come from the namespace-scoped admin policy, nothing cluster-wide"
  }
}

run "no_group_without_a_cluster" {
  command = plan
  variables {
    deploy_cluster = null
  }

  assert {
    condition     = output.rbac_group == null
    error_message = "no Kubernetes group without deploy rights"
  }
}

run "rejects_a_system_group" {
  command = plan
  variables {
    kubernetes_group = "system:masters"
  }
  expect_failures = [var.kubernetes_group]
}

run "branch_subjects_for_dev" {
  command = plan
  variables {
    github_environment = "staging"
    github_branches    = ["dev"]
  }

  assert {
    condition     = jsondecode(aws_iam_role.ci.assume_role_policy).Statement[0].Condition.StringEquals["token.actions.githubusercontent.com:sub"] == ["repo:example/comments-api:environment:staging", "repo:example/comments-api:ref:refs/heads/dev"]
    error_message = "staging environment and dev branch pushes"
  }
}

run "no_deploy_rights_without_a_cluster" {
  command = plan
  variables {
    deploy_cluster = null
  }

  assert {
    condition     = length(aws_eks_access_entry.deploy) == 0 && length([for s in jsondecode(aws_iam_role_policy.ci.policy).Statement : s if s.Sid == "FindCluster"]) == 0
    error_message = "no cluster access"
  }
}

run "rejects_wildcard_repository" {
  command = plan
  variables {
    github_repository = "example/*"
  }
  expect_failures = [var.github_repository]
}

run "rejects_wildcard_branch" {
  command = plan
  variables {
    github_branches = ["*"]
  }
  expect_failures = [var.github_branches]
}

run "rejects_kube_system" {
  command = plan
  variables {
    deploy_cluster = {
      name       = "c"
      arn        = "arn:aws:eks:eu-west-1:123456789012:cluster/c"
      namespaces = ["kube-system"]
    }
  }
  expect_failures = [var.deploy_cluster]
}

run "rejects_wildcard_namespaces" {
  command = plan
  variables {
    deploy_cluster = {
      name       = "c"
      arn        = "arn:aws:eks:eu-west-1:123456789012:cluster/c"
      namespaces = ["kube-*"]
    }
  }
  expect_failures = [var.deploy_cluster]
}

run "rejects_match_all_namespace" {
  command = plan
  variables {
    deploy_cluster = {
      name       = "c"
      arn        = "arn:aws:eks:eu-west-1:123456789012:cluster/c"
      namespaces = ["*"]
    }
  }
  expect_failures = [var.deploy_cluster]
}

run "rejects_wildcard_push_repository" {
  command = plan
  variables {
    push_repository_arns = ["arn:aws:ecr:eu-west-1:123456789012:repository/*"]
  }
  expect_failures = [var.push_repository_arns]
}

run "rejects_wildcard_pull_repository" {
  command = plan
  variables {
    pull_repository_arns = ["arn:aws:ecr:eu-west-1:123456789012:repository/comments-api/*"]
  }
  expect_failures = [var.pull_repository_arns]
}

run "rejects_a_session_shorter_than_iam_allows" {
  command = plan
  variables {
    max_session_seconds = 900
  }
  expect_failures = [var.max_session_seconds]
}

# Names git check-ref-format --branch refuses: the role would never match them.
run "rejects_a_branch_with_two_dots" {
  command = plan
  variables {
    github_branches = ["a..b"]
  }
  expect_failures = [var.github_branches]
}

run "rejects_a_branch_with_a_trailing_slash" {
  command = plan
  variables {
    github_branches = ["feature/"]
  }
  expect_failures = [var.github_branches]
}

run "rejects_a_branch_with_a_leading_slash" {
  command = plan
  variables {
    github_branches = ["/dev"]
  }
  expect_failures = [var.github_branches]
}

run "rejects_a_branch_with_a_doubled_slash" {
  command = plan
  variables {
    github_branches = ["feature//x"]
  }
  expect_failures = [var.github_branches]
}

run "rejects_a_branch_with_a_dot_lock_part" {
  command = plan
  variables {
    github_branches = ["dev.lock"]
  }
  expect_failures = [var.github_branches]
}

run "rejects_a_branch_with_a_part_starting_with_a_dot" {
  command = plan
  variables {
    github_branches = ["feature/.x"]
  }
  expect_failures = [var.github_branches]
}

run "rejects_a_branch_with_a_trailing_dot" {
  command = plan
  variables {
    github_branches = ["dev."]
  }
  expect_failures = [var.github_branches]
}

run "rejects_a_branch_with_a_leading_dash" {
  command = plan
  variables {
    github_branches = ["-dev"]
  }
  expect_failures = [var.github_branches]
}

run "accepts_branches_with_dots_and_slashes" {
  command = plan
  variables {
    github_environment = "staging"
    github_branches    = ["release/1.2", "feature/x.y_z-1", "x.lockx"]
  }

  assert {
    condition     = contains(jsondecode(aws_iam_role.ci.assume_role_policy).Statement[0].Condition.StringEquals["token.actions.githubusercontent.com:sub"], "repo:example/comments-api:ref:refs/heads/release/1.2")
    error_message = "a release branch with a dot is trusted as written"
  }
}

# A role for jobs that only pull and deploy (staging's E2E): no push list, no write action.
run "pull_only_role_cannot_push" {
  command = plan
  variables {
    push_repository_arns = []
  }

  assert {
    condition = length(setintersection(
      flatten([for s in jsondecode(aws_iam_role_policy.ci.policy).Statement : s.Action]),
      ["ecr:PutImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload"],
    )) == 0
    error_message = "no ECR write action without a push repository"
  }
  assert {
    condition     = contains(flatten([for s in jsondecode(output.policy).Statement : s.Action if s.Sid == "ReadImages"]), "ecr:DescribeImageScanFindings")
    error_message = "it reads the scan findings of what it pulls (the scan gate)"
  }
}
