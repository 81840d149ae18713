# EKS: a control plane with every log type on, Kubernetes secrets envelope-encrypted
# with a customer key, access through EKS access entries (no aws-auth ConfigMap), an
# IAM OIDC provider for service-account roles, and one managed node group per zone so
# the nodes are spread over all three zones by construction, not by the ASG's luck.
locals {
  log_group = "/aws/eks/${var.name}/cluster"
  # The OIDC issuer without its scheme, as IAM condition keys spell it.
  oidc_issuer_host = replace(aws_eks_cluster.this.identity[0].oidc[0].issuer, "https://", "")
  # The chart's service account when installed as docs/terraform.md says (release
  # aws-load-balancer-controller in kube-system); the Helm values name it explicitly.
  load_balancer_controller_service_account = "aws-load-balancer-controller"
  load_balancer_controller                 = var.load_balancer_controller_policy_json != ""
  # IRSA trust policies: each role assumable only by its one service account, through
  # the cluster's OIDC provider, for STS.
  service_account_trust = {
    for role, account in {
      ebs_csi                  = "kube-system:ebs-csi-controller-sa"
      load_balancer_controller = "kube-system:${local.load_balancer_controller_service_account}"
      } : role => jsonencode({
        Version = "2012-10-17"
        Statement = [{
          Effect    = "Allow"
          Principal = { Federated = aws_iam_openid_connect_provider.cluster.arn }
          Action    = "sts:AssumeRoleWithWebIdentity"
          Condition = {
            StringEquals = {
              "${local.oidc_issuer_host}:sub" = "system:serviceaccount:${account}"
              "${local.oidc_issuer_host}:aud" = "sts.amazonaws.com"
            }
          }
        }]
    })
  }
}

module "key" {
  source                = "../kms-key"
  alias                 = "${var.name}-eks"
  description           = "${var.name}: EKS secrets and control-plane logs"
  aws_account_id        = var.aws_account_id
  region                = var.region
  log_group_arn_pattern = "arn:aws:logs:${var.region}:${var.aws_account_id}:log-group:${local.log_group}"
  tags                  = merge(var.tags, { Name = "${var.name}-eks" })
}

moved {
  from = aws_kms_key.cluster
  to   = module.key.aws_kms_key.this
}

moved {
  from = aws_kms_alias.cluster
  to   = module.key.aws_kms_alias.this
}

# Created before the cluster so EKS does not create an unencrypted one that never expires.
resource "aws_cloudwatch_log_group" "cluster" {
  name              = local.log_group
  retention_in_days = var.log_retention_days
  kms_key_id        = module.key.arn
  tags              = var.tags
}

resource "aws_iam_role" "cluster" {
  name = "${var.name}-eks-cluster"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "cluster" {
  for_each   = toset(["AmazonEKSClusterPolicy", "AmazonEKSVPCResourceController"])
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:aws:iam::aws:policy/${each.value}"
}

resource "aws_eks_cluster" "this" {
  name                      = var.name
  version                   = var.kubernetes_version
  role_arn                  = aws_iam_role.cluster.arn
  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  vpc_config {
    subnet_ids              = values(var.subnet_ids_by_zone)
    endpoint_private_access = true
    endpoint_public_access  = length(var.api_public_cidrs) > 0
    public_access_cidrs     = length(var.api_public_cidrs) > 0 ? var.api_public_cidrs : null
  }

  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = module.key.arn
    }
  }

  access_config {
    authentication_mode = "API"
    # Whoever runs `terraform apply` gets no hidden admin grant; admins are listed.
    bootstrap_cluster_creator_admin_permissions = false
  }

  upgrade_policy {
    support_type = "STANDARD"
  }

  tags = var.tags

  depends_on = [aws_cloudwatch_log_group.cluster, aws_iam_role_policy_attachment.cluster]
}

# Service-account roles (IRSA): pods assume IAM roles through the cluster's issuer.
resource "aws_iam_openid_connect_provider" "cluster" {
  url            = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list = ["sts.amazonaws.com"]
  tags           = var.tags
}

resource "aws_eks_access_entry" "admin" {
  for_each      = toset(var.admin_role_arns)
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = each.value
  type          = "STANDARD"
  tags          = var.tags
}

resource "aws_eks_access_policy_association" "admin" {
  for_each      = toset(var.admin_role_arns)
  cluster_name  = aws_eks_cluster.this.name
  principal_arn = aws_eks_access_entry.admin[each.value].principal_arn
  policy_arn    = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
  access_scope {
    type = "cluster"
  }
}

# --- nodes ---------------------------------------------------------------------------

resource "aws_iam_role" "node" {
  name = "${var.name}-eks-node"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each   = toset(["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"])
  role       = aws_iam_role.node.name
  policy_arn = "arn:aws:iam::aws:policy/${each.value}"
}

resource "aws_launch_template" "node" {
  name_prefix = "${var.name}-node-"
  description = "EKS nodes of ${var.name}: IMDSv2 only, encrypted root volume"

  # IMDSv2 only, and one hop: pods cannot reach the node's credentials; they get their
  # own through service-account roles.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.node_disk_size_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-node" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = "${var.name}-node" })
  }

  tags = var.tags
}

resource "aws_eks_node_group" "zone" {
  for_each        = var.subnet_ids_by_zone
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "${var.name}-${each.key}"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = [each.value]
  ami_type        = "AL2023_x86_64_STANDARD"
  # The control plane's version, read from the cluster so the node groups update after it:
  # left unset, a node group keeps the version it was created with (the provider sees no
  # drift), and raising kubernetes_version upgraded the control plane alone.
  version = aws_eks_cluster.this.version
  # The AMI release within that version. Null: the latest at creation (and at each
  # Kubernetes upgrade), then never refreshed: EKS does not roll nodes onto new AMI
  # releases by itself. Setting node_ami_release_version to a newer release rolls the
  # nodes, one at a time (docs/terraform.md, "Node OS images").
  release_version = var.node_ami_release_version
  capacity_type   = var.capacity_type
  instance_types  = var.node_instance_types

  scaling_config {
    min_size     = var.nodes_per_zone.min
    desired_size = var.nodes_per_zone.desired
    max_size     = var.nodes_per_zone.max
  }

  update_config {
    max_unavailable = 1
  }

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  tags = merge(var.tags, { Name = "${var.name}-${each.key}" })

  # The autoscaler changes desired_size; Terraform keeps min and max.
  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]
  }

  depends_on = [aws_iam_role_policy_attachment.node]
}

# --- add-ons -------------------------------------------------------------------------

resource "aws_iam_role" "ebs_csi" {
  name               = "${var.name}-ebs-csi"
  assume_role_policy = local.service_account_trust["ebs_csi"]
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "ebs_csi" {
  role       = aws_iam_role.ebs_csi.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
}

# The AWS Load Balancer Controller (installed by hand with Helm, docs/terraform.md). Its
# permissions are the IAM policy the controller publishes for each release, passed in
# by the operator for the version they install: it changes between releases, so a copy
# kept here would drift from the controller actually running. No policy, no role.
resource "aws_iam_role" "load_balancer_controller" {
  count              = local.load_balancer_controller ? 1 : 0
  name               = "${var.name}-lb-controller"
  assume_role_policy = local.service_account_trust["load_balancer_controller"]
  tags               = var.tags
}

# A managed policy, as the controller's install guide creates it (`aws iam
# create-policy`), so the published document is used the way it is written for.
# checkov sees only the variable, not the document: given the published one it reports
# CKV_AWS_290 and CKV_AWS_355 (writes on Resource "*": the controller creates load
# balancers, target groups and security groups it cannot name in advance; tag conditions
# scope part of them). The variable's validations refuse the broadest grants ("*",
# "iam:*", NotAction).
resource "aws_iam_policy" "load_balancer_controller" {
  count       = local.load_balancer_controller ? 1 : 0
  name        = "${var.name}-lb-controller"
  description = "AWS Load Balancer Controller of ${var.name}: the controller's published policy for the installed release."
  policy      = var.load_balancer_controller_policy_json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "load_balancer_controller" {
  count      = local.load_balancer_controller ? 1 : 0
  role       = aws_iam_role.load_balancer_controller[0].name
  policy_arn = aws_iam_policy.load_balancer_controller[0].arn
}

# Add-ons managed by EKS (versions: EKS's default for the cluster's version at creation,
# which no later plan changes: update them after a cluster upgrade, docs/terraform.md);
# the EBS CSI driver backs the PostgreSQL and Prometheus volumes of the Kubernetes delivery, and
# metrics-server (an EKS community add-on) serves the resource metrics API the HPA's CPU
# target reads: without it every HPA reports FailedGetResourceMetric and stays at its
# minimum. The HPA's worker-saturation metric needs kube-prometheus-stack and
# prometheus-adapter on top, which Helm installs (docs/terraform.md, section 5).
resource "aws_eks_addon" "this" {
  for_each                    = toset(["vpc-cni", "kube-proxy", "coredns", "aws-ebs-csi-driver", "metrics-server"])
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = each.value
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "PRESERVE"
  service_account_role_arn    = each.value == "aws-ebs-csi-driver" ? aws_iam_role.ebs_csi.arn : null
  # The VPC CNI enforces Kubernetes NetworkPolicies only with its network policy agent,
  # which is off by default: every policy of the delivery (default deny, Redis only from
  # the app, 5432 only to the database subnets) would be accepted and ignored.
  configuration_values = each.value == "vpc-cni" ? jsonencode({ enableNetworkPolicy = "true" }) : null
  tags                 = var.tags

  # coredns and the CSI controller need nodes to schedule on.
  depends_on = [aws_eks_node_group.zone]
}
