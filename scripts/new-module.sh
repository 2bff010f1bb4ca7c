#!/usr/bin/env bash
# Starts a new module from templates/module/.
#
#   scripts/new-module.sh NAME [--dest DIR]
#       (`make new-module NAME=hello`) copies the template to
#       DIR/modules/NAME, renames every `template_module` in it to NAME
#       (crate, library, manifest name and prefix /NAME/) and adds
#       "modules/NAME" to the members of DIR/Cargo.toml. `make` then builds
#       it and installs modules/NAME.so; `cargo test -p NAME` runs its tests.
#
# DIR is a workspace root; it defaults to this repository's. NAME must be
# [a-z][a-z0-9_]{0,31} (it is the crate, the library file and the URL
# prefix), must not name a module that ships with Switchyard, and
# DIR/modules/NAME must not exist yet.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
template="$repo/templates/module"
builtin="http rpc webapp cron proxy template_module"

usage() {
	echo "usage: scripts/new-module.sh NAME [--dest DIR]" >&2
	exit 2
}

name=""
dest="$repo"
while [ $# -gt 0 ]; do
	case "$1" in
	--dest)
		[ $# -ge 2 ] || usage
		dest="$2"
		shift 2
		;;
	-*) usage ;;
	*)
		[ -z "$name" ] || usage
		name="$1"
		shift
		;;
	esac
done
[ -n "$name" ] || usage

fail() {
	echo "new-module: $*" >&2
	exit 1
}

[[ "$name" =~ ^[a-z][a-z0-9_]{0,31}$ ]] ||
	fail "'$name' is not a module name: a lowercase letter, then up to 31 of a-z, 0-9, _"
for b in $builtin; do
	[ "$name" != "$b" ] || fail "'$name' is the name of a built-in module"
done
[ -d "$template" ] || fail "no template at $template"
[ -f "$dest/Cargo.toml" ] || fail "$dest is not a workspace root (no Cargo.toml)"
grep -q '^members = \[' "$dest/Cargo.toml" ||
	fail "$dest/Cargo.toml has no 'members = [' list to add the module to"
target="$dest/modules/$name"
[ ! -e "$target" ] || fail "$target already exists"

# Copy into a scratch directory first and move it into place at the end, so
# a failure never leaves a half-made module behind.
mkdir -p "$dest/modules"
scratch="$(mktemp -d "$dest/modules/.new-module.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
cp -R "$template/." "$scratch/"
rm -rf "$scratch/target"
# The name is [a-z0-9_] only, so it is safe in a sed replacement.
find "$scratch" -type f -exec sed -i "s/template_module/$name/g" {} +

# The new member goes last in the `members = [...]` list.
awk -v member="    \"modules/$name\"," '
	/^members = \[/ { inside = 1 }
	inside && /^\]/ { print member; inside = 0 }
	{ print }
' "$dest/Cargo.toml" >"$dest/Cargo.toml.new-module"
mv "$dest/Cargo.toml.new-module" "$dest/Cargo.toml"
mv "$scratch" "$target"
trap - EXIT

echo "new-module: made $target"
echo "  build and install: make            (then modules/$name.so serves /$name/)"
echo "  test:              cargo test -p $name"
