// CoreDNS for the simulated cluster's real node: the cluster's DNS, with only the plugins its
// Corefile uses (scripts/cluster/node.sh), in CoreDNS's own order. Without `forward` it
// answers for cluster.local and nothing else, so no query leaves the node.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	// A subset of core/dnsserver/zdirectives.go, in its order: the order plugins run in.
	dnsserver.Directives = []string{"ready", "health", "errors", "log", "loadbalance", "cache", "kubernetes"}
}

func main() { coremain.Run() }
