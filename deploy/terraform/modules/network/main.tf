# A VPC over three zones: private subnets (nodes, database) and public ones (load
# balancers, NAT), NAT egress, flow logs to an encrypted log group, and a default
# security group that allows nothing.
locals {
  zones = { for i, az in var.availability_zones : az => i }
  # Private subnets take the first three quarters of the range (pods use VPC IPs with the
  # VPC CNI, so they need room); public subnets split the last quarter.
  private_cidrs = { for az, i in local.zones : az => cidrsubnet(var.vpc_cidr, 2, i) }
  public_cidrs  = { for az, i in local.zones : az => cidrsubnet(cidrsubnet(var.vpc_cidr, 2, 3), 2, i) }
  nat_zones     = var.single_nat_gateway ? [var.availability_zones[0]] : var.availability_zones
  log_group     = "/aws/vpc/${var.name}/flow-logs"
}

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(var.tags, { Name = var.name })
}

# No rules at all: every workload gets its own, explicit security group.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-default-deny" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = var.name })
}

resource "aws_subnet" "public" {
  for_each          = local.public_cidrs
  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = each.value
  # Load balancers and NAT gateways get their addresses explicitly; nothing launched here
  # should receive a public IP by accident.
  map_public_ip_on_launch = false
  tags = merge(var.tags, {
    Name                                        = "${var.name}-public-${each.key}"
    Tier                                        = "public"
    "kubernetes.io/role/elb"                    = "1"
    "kubernetes.io/cluster/${var.cluster_name}" = "shared"
  })
}

resource "aws_subnet" "private" {
  for_each                = local.private_cidrs
  vpc_id                  = aws_vpc.this.id
  availability_zone       = each.key
  cidr_block              = each.value
  map_public_ip_on_launch = false
  tags = merge(var.tags, {
    Name                                        = "${var.name}-private-${each.key}"
    Tier                                        = "private"
    "kubernetes.io/role/internal-elb"           = "1"
    "kubernetes.io/cluster/${var.cluster_name}" = "shared"
  })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "public_internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  for_each       = aws_subnet.public
  subnet_id      = each.value.id
  route_table_id = aws_route_table.public.id
}

resource "aws_eip" "nat" {
  for_each = toset(local.nat_zones)
  domain   = "vpc"
  tags     = merge(var.tags, { Name = "${var.name}-nat-${each.key}" })
}

resource "aws_nat_gateway" "this" {
  for_each      = toset(local.nat_zones)
  allocation_id = aws_eip.nat[each.key].id
  subnet_id     = aws_subnet.public[each.key].id
  tags          = merge(var.tags, { Name = "${var.name}-nat-${each.key}" })
  depends_on    = [aws_internet_gateway.this]
}

# One route table per zone, so each zone leaves through its own NAT gateway when there
# is one per zone (a zone outage then leaves the other zones' egress intact).
resource "aws_route_table" "private" {
  for_each = local.private_cidrs
  vpc_id   = aws_vpc.this.id
  tags     = merge(var.tags, { Name = "${var.name}-private-${each.key}" })
}

resource "aws_route" "private_nat" {
  for_each               = aws_route_table.private
  route_table_id         = each.value.id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this[var.single_nat_gateway ? var.availability_zones[0] : each.key].id
}

resource "aws_route_table_association" "private" {
  for_each       = aws_subnet.private
  subnet_id      = each.value.id
  route_table_id = aws_route_table.private[each.key].id
}

# --- flow logs -----------------------------------------------------------------------

module "logs_key" {
  source                = "../kms-key"
  alias                 = "${var.name}-flow-logs"
  description           = "${var.name}: VPC flow logs"
  aws_account_id        = var.aws_account_id
  region                = var.region
  log_group_arn_pattern = "arn:aws:logs:${var.region}:${var.aws_account_id}:log-group:${local.log_group}"
  tags                  = merge(var.tags, { Name = "${var.name}-flow-logs" })
}

moved {
  from = aws_kms_key.logs
  to   = module.logs_key.aws_kms_key.this
}

moved {
  from = aws_kms_alias.logs
  to   = module.logs_key.aws_kms_alias.this
}

resource "aws_cloudwatch_log_group" "flow" {
  name              = local.log_group
  retention_in_days = var.flow_log_retention_days
  kms_key_id        = module.logs_key.arn
  tags              = var.tags
}

resource "aws_iam_role" "flow_logs" {
  name = "${var.name}-flow-logs"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "vpc-flow-logs.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = {
        StringEquals = { "aws:SourceAccount" = var.aws_account_id }
      }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy" "flow_logs" {
  name = "write-flow-logs"
  role = aws_iam_role.flow_logs.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
      Resource = "${aws_cloudwatch_log_group.flow.arn}:*"
    }]
  })
}

resource "aws_flow_log" "this" {
  vpc_id                   = aws_vpc.this.id
  traffic_type             = "ALL"
  log_destination_type     = "cloud-watch-logs"
  log_destination          = aws_cloudwatch_log_group.flow.arn
  iam_role_arn             = aws_iam_role.flow_logs.arn
  max_aggregation_interval = 60
  tags                     = merge(var.tags, { Name = var.name })
}
