variable "name" {
  description = "Name prefix of every resource, e.g. comments-api-production."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,38}$", var.name))
    error_message = "name: 3-39 characters, lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "aws_account_id" {
  description = "AWS account the VPC lives in (12 digits); used in the flow-log key policy instead of a credentialed lookup."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{12}$", var.aws_account_id))
    error_message = "aws_account_id must be 12 digits."
  }
}

variable "region" {
  description = "AWS region, e.g. eu-west-1."
  type        = string
  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "region must look like eu-west-1."
  }
}

variable "availability_zones" {
  description = "Exactly three availability zones of the region (names, passed in so planning needs no AWS call)."
  type        = list(string)
  validation {
    condition     = length(var.availability_zones) == 3 && length(distinct(var.availability_zones)) == 3
    error_message = "availability_zones: exactly three distinct zones (high availability needs one per zone)."
  }
  # A zone of another region (or a zone ID such as euw1-az1) plans fine and fails when
  # the first subnet is created.
  validation {
    condition     = alltrue([for z in var.availability_zones : startswith(z, var.region) && can(regex("^[a-z]$", trimprefix(z, var.region)))])
    error_message = "availability_zones: zone names of var.region, i.e. the region followed by one letter (eu-west-1a for eu-west-1)."
  }
}

variable "vpc_cidr" {
  description = "IPv4 range of the VPC, /16 to /20. Private subnets get a quarter each, public ones share the last quarter."
  type        = string
  default     = "10.40.0.0/16"
  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be an IPv4 CIDR between /16 and /20."
  }
  # cidrhost() takes IPv6 and host bits too: fd00::/16 or 10.40.1.0/16 passed the
  # check above and failed only in the provider, on the VPC and every subnet.
  validation {
    condition     = can(cidrnetmask(var.vpc_cidr)) && try(cidrsubnet(var.vpc_cidr, 0, 0) == var.vpc_cidr, false)
    error_message = "vpc_cidr: an IPv4 range in canonical form, without host bits (10.40.0.0/16, not 10.40.1.0/16); the subnets are carved from it as IPv4."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper; staging) instead of one per zone (a zone outage keeps egress; production)."
  type        = bool
  default     = false
}

variable "flow_log_retention_days" {
  description = "Days the VPC flow logs are kept in CloudWatch Logs."
  type        = number
  default     = 365
  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_log_retention_days)
    error_message = "flow_log_retention_days must be a CloudWatch Logs retention value (1, 3, 5, 7, 14, 30, ..., 365, ..., 3653)."
  }
}

variable "cluster_name" {
  description = "EKS cluster name, for the subnet discovery tags the AWS load balancer controller reads."
  type        = string
}

variable "tags" {
  description = "Tags added to every resource (on top of the provider's default tags)."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for k, v in var.tags : length(k) > 0 && length(k) <= 128 && length(v) <= 256])
    error_message = "tags: keys of 1-128 characters, values of at most 256 (AWS limits)."
  }
}
