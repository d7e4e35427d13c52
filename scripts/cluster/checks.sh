# shellcheck shell=bash
# ctx, target, repo and SIDECAR_SELECTOR are set by cluster.sh, which sources this file.
# shellcheck disable=SC2154
#
# The checks of scripts/cluster.sh (sourced by it): `preflight`, which `up` runs before it
# changes anything, and `doctor`, which adds the dev loop's tools and the cluster's state.
# Each check prints one line: what it found, or what is wrong and what to do about it. A
# failed required check sets failed=1. A tool is run only once it is known to exist, so no
# shell error ("command not found") reaches the user.

found() { printf '  %-17s %s\n' "$1" "$2"; }

# problem NAME REQUIRED(1|0) TEXT
problem() {
  if [ "$2" = 1 ]; then
    printf '  %-17s %s\n' "$1" "$3"
    failed=1
  else
    printf '  %-17s (optional) %s\n' "$1" "$3"
  fi
}

# check NAME REQUIRED(1|0) PROBLEM COMMAND...: fine when COMMAND succeeds and prints something
# (its first line is shown); else PROBLEM, which says what to do.
check() {
  local name=$1 required=$2 text=$3 output; shift 3
  if output=$("$@" 2>/dev/null) && [ -n "$output" ]; then
    found "$name" "${output%%$'\n'*}"
  else
    problem "$name" "$required" "$text"
  fi
}

# have, version_at_least, and the table of tools (Tilt's minimum, as the local loop reads it).
# shellcheck source=../lib/tools_table.sh
. "$repo/scripts/lib/tools_table.sh"

# The engines k3d, kind and Rancher Desktop need: the CLI alone is not enough.
docker_engine() { local v; v=$(docker info --format '{{.ServerVersion}}') && [ -n "$v" ] && echo "Docker Engine $v answers"; }
containerd_engine() { nerdctl --namespace k8s.io info >/dev/null && echo "containerd answers (namespace k8s.io)"; }
context_answers() { [ "$(kubectl --context "$ctx" get --raw /readyz 2>/dev/null)" = ok ] && echo "$ctx answers"; }

engine_check() {
  case $1 in
    docker) have docker || return 0
      check "docker engine" 1 "no Docker Engine answers: start Docker Desktop, Rancher Desktop (engine dockerd) or the docker service" docker_engine
      if docker_engine >/dev/null 2>&1; then cgroup_check; fi ;;
    containerd) have nerdctl || return 0
      check "containerd" 1 "Rancher Desktop's containerd does not answer: start Rancher Desktop with Preferences › Container Engine › General › containerd" containerd_engine ;;
  esac
}

# The kind and k3d node images run Kubernetes 1.35, whose kubelet refuses a cgroup v1 host; kind
# then says only "failed to create cluster". Docker reports the host's (or its VM's) version.
cgroup_check() {
  local version
  version=$(docker info --format '{{.CgroupVersion}}' 2>/dev/null || true)
  case $version in
    2) found cgroup "v2 (the node image's Kubernetes 1.35 needs it)" ;;
    1) problem cgroup 1 "v1, which the node image's Kubernetes 1.35 refuses. Switch the host to cgroup v2 (Ubuntu 20.04: add systemd.unified_cgroup_hierarchy=1 to GRUB_CMDLINE_LINUX in /etc/default/grub, update-grub, reboot; WSL: kernelCommandLine = cgroup_no_v1=all under [wsl2] in %UserProfile%\\.wslconfig, then wsl --shutdown), or use Rancher Desktop" ;;
    *) problem cgroup 0 "version unknown ('docker info' has no CgroupVersion: Docker before 20.10?); the node image's Kubernetes 1.35 needs cgroup v2" ;;
  esac
}

# The shim's kind node image is kindest/node v1.35, first made by kind 0.31; kind's release
# notes promise a node image only to the kind release it was built for, or a newer one.
KIND_MIN=0.31.0
kind_check() {
  local install="https://kind.sigs.k8s.io/docs/user/quick-start/#installation" version
  if ! have kind; then problem kind 1 "missing: $install"; return 0; fi
  version=$(kind version 2>/dev/null | sed -n 's/^kind v\([0-9][0-9.]*\).*/\1/p')
  if [ -n "$version" ] && version_at_least "$version" "$KIND_MIN"; then
    found kind "v$version"
  else
    problem kind 1 "${version:+v$version }too old: the shim's node image (Kubernetes 1.35) needs kind $KIND_MIN or newer: $install"
  fi
}

# What `up` needs for its cluster: the CLIs it runs and the engine behind them; on Rancher
# Desktop also what its settings must have installed.
preflight() {
  failed=0
  step "preflight: the $target cluster (context $ctx)"
  # The simulated cluster brings its own kubectl and installs nothing with Helm.
  if [ "$target" != sim ]; then
    check kubectl 1 "missing: https://kubernetes.io/docs/tasks/tools/" kubectl version --client
    check helm 1 "missing: https://helm.sh/docs/intro/install/" helm version --short
  fi
  case $target in
    sim) sim_preflight ;;
    kind)
      check docker 1 "missing: Docker Engine or Docker Desktop: https://docs.docker.com/get-docker/" docker --version
      kind_check
      engine_check docker ;;
    k3d)
      check docker 1 "missing: Docker Engine or Docker Desktop: https://docs.docker.com/get-docker/" docker --version
      check k3d 1 "missing: https://k3d.io/stable/#installation (or use kind: scripts/cluster.sh up --kind)" k3d version
      engine_check docker ;;
    rancher)
      check nerdctl 1 "missing: ships with Rancher Desktop (Preferences › Container Engine › General › containerd)" nerdctl --version
      engine_check containerd
      rancher_desktop_version
      if have kubectl; then
        check "kube context" 1 "$ctx does not answer: start Rancher Desktop with Preferences › Kubernetes › Enable Kubernetes" context_answers
        [ "$failed" = 1 ] || rancher_cluster
      fi ;;
  esac
  [ "$failed" = 0 ]
}

# The Spin shim each Rancher Desktop release bundles (its pkg/rancher-desktop/assets/
# dependencies.yaml at the release tag) and the Spin it is built on (the shim's Cargo.toml).
rancher_desktop_spin() {
  case $1 in
    1.19.*) echo "containerd-shim-spin 0.19.0, Spin 3.2.0" ;;
    1.20.*) echo "containerd-shim-spin 0.20.0, Spin 3.3.1" ;;
    1.21.*|1.22.*) echo "containerd-shim-spin 0.22.0, Spin 3.5.0" ;;
    1.23.*) echo "containerd-shim-spin 0.24.0, Spin 3.6.3" ;;
    1.24.*) echo "containerd-shim-spin 0.25.1, Spin 4.0.1" ;;
    *) echo "shim and Spin versions unknown to this script" ;;
  esac
}

# rdctl reports the Rancher Desktop release from 1.19 on; older ones print their own fixed
# rdctl version (1.1.0) instead, which says only "before 1.19".
rancher_desktop_version() {
  if ! have rdctl; then
    problem "rancher-desktop" 0 "version unknown: rdctl (in ~/.rd/bin) is not on PATH"
    return 0
  fi
  local version
  version=$(rdctl version 2>/dev/null | sed -n 's/^rdctl client version: v\{0,1\}\([0-9][0-9.]*\).*/\1/p')
  case $version in
    "") problem "rancher-desktop" 0 "version unknown: 'rdctl version' gave no version" ;;
    1.1.0) found "rancher-desktop" "older than 1.19 (its rdctl does not say which); 1.23 or later recommended" ;;
    1.19.*|1.2[0-2].*) found "rancher-desktop" "$version: $(rancher_desktop_spin "$version"); 1.23 or later recommended (the Spin of k3d's image or newer)" ;;
    *) found "rancher-desktop" "$version: $(rancher_desktop_spin "$version")" ;;
  esac
}

# What Rancher Desktop's settings install, read from the cluster. Before 1.17 its spin-operator
# used the API group core.spinoperator.dev, which this project's SpinApp does not use.
rancher_cluster() {
  local runtime
  runtime=$(k get nodes -o jsonpath='{.items[0].status.nodeInfo.containerRuntimeVersion}' 2>/dev/null || true)
  if [[ $runtime == containerd://* ]]; then found "container engine" "$runtime"; else
    problem "container engine" 1 "containerd needed (found ${runtime:-nothing}): Preferences › Container Engine › General › containerd"; fi
  if k get crd spinapps.core.spinkube.dev >/dev/null 2>&1; then
    found "spin-operator" "CRDs core.spinkube.dev installed"
  elif k get crd spinapps.core.spinoperator.dev >/dev/null 2>&1; then
    problem "spin-operator" 1 "Rancher Desktop below 1.17 (spin-operator's old API group core.spinoperator.dev): upgrade Rancher Desktop to 1.23 or later, https://rancherdesktop.io"
    return 0
  else
    problem "spin-operator" 1 "not installed: Preferences › Kubernetes › Install Spin Operator (it needs Preferences › Container Engine › General › WebAssembly (Wasm)), then Apply"
    return 0
  fi
  shim_wiring 1 "Preferences › Container Engine › General › WebAssembly (Wasm) and Preferences › Kubernetes › Install Spin Operator, then Apply"
}

# The chain a SpinApp's pods run on: the executor containerd-shim-spin in the context's namespace
# names a RuntimeClass whose handler is the Spin shim. Rancher Desktop's executor names its
# RuntimeClass `spin` (one per shim, named after it); SpinKube's names wasmtime-spin-v2. Both
# have the handler spin, so this checks the chain rather than a name.
shim_wiring() {
  local required=$1 hint=$2 class handler
  class=$(k get spinappexecutor containerd-shim-spin -o jsonpath='{.spec.deploymentConfig.runtimeClassName}' 2>/dev/null || true)
  if [ -z "$class" ]; then
    problem "Spin executor" "$required" "no SpinAppExecutor containerd-shim-spin in the context's namespace: $hint"
    return 0
  fi
  handler=$(k get runtimeclass "$class" -o jsonpath='{.handler}' 2>/dev/null || true)
  if [ "$handler" = spin ]; then
    found "Spin executor" "containerd-shim-spin → RuntimeClass $class → handler spin"
  else
    problem "Spin executor" "$required" "containerd-shim-spin names RuntimeClass $class, which ${handler:+has handler $handler, not spin}${handler:-does not exist}: $hint"
  fi
}

# spin-operator's webhooks have failurePolicy Fail: a SpinApp applies only once they answer.
# A server-side dry run of the app's own SpinApp goes through them (and the executor check).
spin_operator_webhook() { k apply --dry-run=server -f "$repo/kubernetes/base/spinapp.yaml" >/dev/null && echo "accepts kubernetes/base/spinapp.yaml (server-side dry run)"; }

# Dapr's injector webhook has failurePolicy Ignore: while it has no ready endpoint, new pods
# start without daprd. Ready endpoint = it injects.
dapr_injector() {
  [[ $(k get endpointslices --namespace dapr-system -l kubernetes.io/service-name=dapr-sidecar-injector \
      -o jsonpath='{.items[*].endpoints[*].conditions.ready}' 2>/dev/null) == *true* ]] && echo "ready endpoint"
}

# Each pod of the app's daprd Deployment (kubernetes/base/dapr-sidecar.yaml) must have daprd:
# its annotations ask the injector for it.
app_sidecar() {
  local pods name containers watchdog="with Dapr from 'scripts/cluster.sh up' the operator's watchdog does that within 10 s"
  pods=$(k get pods -l "$SIDECAR_SELECTOR" -o jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.containers[*].name}{" "}{.spec.initContainers[*].name}{"\n"}{end}' 2>/dev/null || true)
  if [ -z "$pods" ]; then
    found "app's daprd" "none yet (tilt up deploys it)"
    return 0
  fi
  while read -r name containers; do
    if [[ " $containers " == *" daprd "* ]]; then
      found "app's daprd" "$name has daprd"
    else
      problem "app's daprd" 1 "$name has no daprd container: it started while Dapr's injector was down. Delete it (kubectl --context $ctx delete pod $name) and its Deployment makes one with the sidecar; $watchdog"
    fi
  done <<<"$pods"
}

# Tilt: the version the Tiltfile is tested with (its tools module's), or newer. An older one is
# only a warning: scripts/dev.sh --cluster then builds and runs that version instead.
tilt_check() {
  local min installed
  if ! have tilt; then problem tilt 1 "missing: https://docs.tilt.dev/install.html, or scripts/tools.sh tilt"; return 0; fi
  if installed_ok tilt tilt; then
    found tilt "$(tilt version 2>/dev/null | sed -n 1p)"
  else
    min=$(tool_min tilt)
    problem tilt 0 "${installed:-its version unknown}, older than $min, the Tilt the Tiltfile is tested with: https://docs.tilt.dev/install.html (scripts/dev.sh --cluster builds and uses $min meanwhile)"
  fi
}

wasip2_target() { rustup target list --installed | grep -qx wasm32-wasip2 && echo installed; }

# The preflight, the dev loop's tools, and (when the context answers) the cluster: the Spin
# executor, the two webhooks and the app's sidecar. Exits 1 when something required is wrong.
doctor() {
  pick_target "${1:-}"
  # The simulated cluster answers only inside its namespaces.
  if [ "$target" = sim ] && node_holder_alive && ! node_inside; then node_enter "$repo/scripts/cluster.sh" doctor --sim; fi
  preflight || true
  step "the dev loop's tools"
  tilt_check
  check cargo 1 "missing: https://rustup.rs" cargo --version
  check wasm32-wasip2 1 "missing: rustup target add wasm32-wasip2" wasip2_target
  check spin 0 "missing: for local mode and 'spin registry push': https://spinframework.dev/v3/install" spin --version
  if have kubectl; then
    step "cluster (context $ctx)"
    # The preflight already asked Rancher Desktop's context, and checked its Spin executor.
    [ "$target" = rancher ] || check "kube context" 1 "$ctx does not answer: scripts/cluster.sh up --$target" context_answers
    [ "$target" != sim ] || sim_processes
    if context_answers >/dev/null; then
      [ "$target" = rancher ] || shim_wiring 1 "scripts/cluster.sh up --$target"
      check "spin-operator" 1 "its webhook does not accept the SpinApp: scripts/cluster.sh up --$target, or see kubectl --context $ctx --namespace spin-operator get pods" spin_operator_webhook
      check "Dapr injector" 1 "no ready endpoint, so new pods get no daprd: scripts/cluster.sh up --$target, or see kubectl --context $ctx --namespace dapr-system get pods" dapr_injector
      app_sidecar
    fi
  fi
  [ "$failed" = 0 ] || die "something required is missing or not answering (see above)"
  echo "    all required checks pass"
}
