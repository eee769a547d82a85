# lib.sh holds what the scripts that run an example job under the launcher
# (mnist.sh, lm.sh) share. Source it, after `set -euo pipefail`, with
#   . "$(dirname "$0")/lib.sh"

# setup_and_build EXAMPLE moves to the repository root, puts Go on PATH, sets
# up the machine (scripts/setup.sh) and builds bin/launcher and bin/EXAMPLE
# (from ./examples/EXAMPLE).
setup_and_build() {
	cd "$(dirname "${BASH_SOURCE[0]}")/.."
	# Go from go.dev installs into /usr/local/go, which a non-login shell may not have on PATH.
	command -v go >/dev/null 2>&1 || export PATH="$PATH:/usr/local/go/bin"
	bash scripts/setup.sh

	mkdir -p bin
	go build -o bin/launcher ./launcher
	go build -o "bin/$1" "./examples/$1"
}
