# The IAM role one GitHub Actions environment assumes through OIDC: no long-lived keys.
# The trust is an exact match on the token's audience and subject (StringEquals, no
# wildcards), so only this repository, and only the named environment or branches, get
# in; pull requests and other branches do not. Rights are the least the job needs:
# push to its registry, read the one it promotes from, deploy to its cluster's namespaces.
locals {
  oidc_host         = "token.actions.githubusercontent.com"
  oidc_provider_arn = "arn:aws:iam::${var.aws_account_id}:oidc-provider/${local.oidc_host}"
  subjects = concat(
    ["repo:${var.github_repository}:environment:${var.github_environment}"],
    [for b in var.github_branches : "repo:${var.github_repository}:ref:refs/heads/${b}"],
  )
  ecr_read = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:DescribeImages",
    "ecr:DescribeImageScanFindings",
  ]
  ecr_write = [
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
  ]
  statements = concat(
    [{
      Sid      = "RegistryLogin"
      Effect   = "Allow"
      Action   = ["ecr:GetAuthorizationToken"]
      Resource = "*" # not restrictable to a resource
    }],
    length(var.push_repository_arns) > 0 ? [{
      Sid      = "PushImages"
      Effect   = "Allow"
      Action   = concat(local.ecr_read, local.ecr_write)
      Resource = var.push_repository_arns
    }] : [],
    length(var.pull_repository_arns) > 0 ? [{
      Sid      = "ReadImages"
      Effect   = "Allow"
      Action   = local.ecr_read
      Resource = var.pull_repository_arns
    }] : [],
    var.deploy_cluster != null ? [{
      Sid      = "FindCluster"
      Effect   = "Allow"
      Action   = ["eks:DescribeCluster"]
      Resource = [var.deploy_cluster.arn]
    }] : [],
  )
}

resource "aws_iam_role" "ci" {
  name                 = var.name
  description          = "GitHub Actions (${var.github_repository}, environment ${var.github_environment}) through OIDC"
  max_session_duration = var.max_session_seconds
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "GitHubActionsOIDC"
      Effect    = "Allow"
      Principal = { Federated = local.oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${local.oidc_host}:aud" = "sts.amazonaws.com"
          "${local.oidc_host}:sub" = local.subjects
        }
      }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "ci" {
  name   = "ci"
  role   = aws_iam_role.ci.id
  policy = jsonencode({ Version = "2012-10-17", Statement = local.statements })
}

# Kubernetes rights through an EKS access entry: AmazonEKSAdminPolicy inside the app's
# namespaces only (Deployments, Jobs, Services, ... of the built-in API groups), nothing
# cluster-wide. That fixed rule set covers no custom resource (ServiceMonitor,
# PrometheusRule, SecretStore, ExternalSecret) and, namespace-scoped, not the Namespace
# object the overlay also applies: those come from Kubernetes RBAC bound to the entry's
# group (deploy/k8s/cluster-rbac, applied once by a cluster admin, docs/terraform.md).
resource "aws_eks_access_entry" "deploy" {
  count             = var.deploy_cluster != null ? 1 : 0
  cluster_name      = var.deploy_cluster.name
  principal_arn     = aws_iam_role.ci.arn
  type              = "STANDARD"
  kubernetes_groups = [var.kubernetes_group]
  tags              = var.tags
}

resource "aws_eks_access_policy_association" "deploy" {
  count         = var.deploy_cluster != null ? 1 : 0
  cluster_name  = var.deploy_cluster.name
  principal_arn = aws_eks_access_entry.deploy[0].principal_arn
  policy_arn    = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSAdminPolicy"
  access_scope {
    type       = "namespace"
    namespaces = var.deploy_cluster.namespaces
  }
}
