#!/usr/bin/env python3
"""OCI image archives for the simulated cluster's node, written without an image engine.

The node has no registry and pulls nothing: every image a pod names is written here as an OCI
image layout in one tar (one gzip layer, every mtime 0, so the same files give the same
digest) and imported into the node's containerd (`ctr images import`). A program is packed
with the shared libraries it links (as `ldd` lists them), so a binary built on this machine
runs in an image with nothing else in it.

    oci_image.py NAME OUT.tar [PAUSE]                     the node's image NAME (NODE_IMAGES),
                                                          named as upstream's
                                                          (PAUSE: the built pause program)
    oci_image.py app REF CONTEXT OUT.tar                  kubernetes/image/Dockerfile's image:
                                                          CONTEXT's files at / (Tilt's sim build)

The node's images are kept in the tools cache ($DAPR_SPIN_HELLO_CACHE/sim-images), keyed by the
files they pack, so a cluster's `up` writes each only once.
"""

import gzip
import hashlib
import shutil
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The user Dapr's images run as (distroless "nonroot"); Dapr's chart refuses root.
NONROOT = "65532"
# The sandbox's pause, Dapr's sidecar and its control plane's three (each its own image, as
# Dapr's chart names them), and Redis.
DAPR_CONTROL_PLANE = ("sentry", "injector", "operator")
NODE_IMAGES = ("pause", "daprd", *DAPR_CONTROL_PLANE, "redis")


def tool_paths():
    """{name: path} of the simulated cluster's binaries (scripts/tools.sh sim-paths)."""
    out = subprocess.run([str(REPO / "scripts/tools.sh"), "sim-paths"], capture_output=True, text=True,
                         check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def linked_libraries(binary):
    """The shared objects a dynamically linked binary loads, its loader included."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    libraries = []
    for line in out.splitlines():
        path = line.split("=>")[-1].split("(")[0].strip()
        if path.startswith("/"):
            libraries.append(path)
    return libraries


def program(binary, at):
    """{path in the image: file} for a binary and what it links."""
    files = {at: binary}
    for library in linked_libraries(binary):
        files[library] = library
    return files


def layer(files):
    """A gzip'd tar of {path in the image: source file}, with the folders above each file."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folders = sorted({str(p) for path in files for p in Path(path.lstrip("/")).parents if str(p) != "."})
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for path in sorted(files):
            source = Path(os.path.realpath(files[path]))
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mtime = source.stat().st_size, 0
            info.mode = 0o755 if os.access(source, os.X_OK) else 0o644
            with open(source, "rb") as f:
                tar.addfile(info, f)
    # Level 1: the archive goes to a local containerd, where speed counts, not size.
    return raw.getvalue(), gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


def write_archive(out, ref, files, entrypoint=None, cmd=None, user=None):
    """An OCI image layout tar at `out` holding one image named `ref` (a full reference)."""
    blobs = {}

    def blob(media_type, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    plain, packed = layer(files)
    config = {"architecture": "amd64", "os": "linux",
              "config": {k: v for k, v in {"Entrypoint": entrypoint, "Cmd": cmd, "User": user}.items() if v},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(plain).hexdigest()]}}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": blob("application/vnd.oci.image.config.v1+json", json.dumps(config).encode()),
                "layers": [blob("application/vnd.oci.image.layer.v1.tar+gzip", packed)]}
    descriptor = blob("application/vnd.oci.image.manifest.v1+json", json.dumps(manifest).encode())
    descriptor["annotations"] = {"io.containerd.image.name": ref,
                                 "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [descriptor]}
    with tarfile.open(out, "w") as tar:
        entries = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
                   "index.json": json.dumps(index).encode()}
        entries.update({f"blobs/sha256/{d.split(':')[1]}": data for d, data in blobs.items()})
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))


def dapr_version():
    """The Dapr version cluster.sh installs (DAPR_VERSION, from the daprd tools module)."""
    if not (version := os.environ.get("DAPR_VERSION")):
        raise SystemExit("oci_image.py: DAPR_VERSION is not set (scripts/cluster.sh sets it)")
    return version


def redis_tag():
    for line in (REPO / "kubernetes/base/redis.yaml").read_text().splitlines():
        if line.strip().startswith("image: redis:"):
            return line.split(":", 2)[2].strip()
    raise SystemExit("oci_image.py: no `image: redis:<tag>` in kubernetes/base/redis.yaml")


def which(name):
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if os.access(path := os.path.join(folder, name), os.X_OK):
            return path
    raise SystemExit(f"oci_image.py: {name} is not on PATH (scripts/tools.sh redis installs it)")


def node_image_contents(name, pause_binary):
    """(reference, files, entrypoint, user) of the image `name` (NODE_IMAGES), as upstream
    publishes it."""
    tools = tool_paths()
    if name == "pause":
        return "registry.k8s.io/pause:3.10", {"/pause": pause_binary}, ["/pause"], None
    if name == "daprd" or name in DAPR_CONTROL_PLANE:
        return f"ghcr.io/dapr/{name}:{dapr_version()}", program(tools[name], f"/{name}"), [f"/{name}"], NONROOT
    if name == "redis":
        # The official image builds Redis with protected mode off, so that a pod's peers may
        # connect; Debian's package keeps it on.
        files = program(which("redis-server"), "/usr/local/bin/redis-server")
        files.update(program(which("redis-cli"), "/usr/local/bin/redis-cli"))
        return (f"docker.io/library/redis:{redis_tag()}", files,
                ["/usr/local/bin/redis-server", "--protected-mode", "no"], None)
    raise SystemExit(f"oci_image.py: no image {name!r} ({', '.join(NODE_IMAGES)})")


def node_image(name, out, pause_binary=None):
    """The node's image `name` at `out`, from the cache when its files are unchanged."""
    ref, files, entrypoint, user = node_image_contents(name, pause_binary)
    key = hashlib.sha256(Path(__file__).read_bytes())
    for path, source in sorted(files.items()):
        stat = os.stat(source)
        key.update(f"{path} {os.path.realpath(source)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    cache = Path(os.environ.get("DAPR_SPIN_HELLO_CACHE", Path.home() / ".cache/dapr-spin-hello")) / "sim-images"
    cached = cache / f"{name}-{key.hexdigest()[:16]}.tar"
    if not cached.exists():
        cache.mkdir(parents=True, exist_ok=True)
        for stale in cache.glob(f"{name}-*.tar"):
            stale.unlink()
        partial = cached.with_suffix(".partial")
        write_archive(partial, ref, files, entrypoint=entrypoint, user=user)
        partial.rename(cached)
    shutil.copyfile(cached, out)


def app_image(ref, context, out):
    """kubernetes/image/Dockerfile's image (FROM scratch, its files at /) from the build context."""
    context = Path(context)
    files = {"/" + str(p.relative_to(context)): str(p) for p in context.rglob("*") if p.is_file()}
    if not files:
        raise SystemExit(f"oci_image.py: the build context {context} is empty")
    # A bare name is Docker Hub's library/ (what the kubelet asks containerd for).
    if "/" not in ref.split(":")[0]:
        ref = "docker.io/library/" + ref
    write_archive(out, ref, files)


def main(args):
    if len(args) == 4 and args[0] == "app":
        app_image(args[1], args[2], args[3])
    elif len(args) in (2, 3) and args[0] != "app":
        node_image(args[0], args[1], *args[2:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
