#!/usr/bin/env bash
# Re-fetches the pinned KaTeX that typesets the site's equations into docs/assets/katex/.
#
#   bash docs/vendor_katex.sh
#
# The site ships KaTeX instead of loading it from a CDN, so the equations render offline (a laptop on
# a train, a cluster without internet, `mkdocs serve` anywhere). The tarball comes from the npm registry
# (`npm pack katex@VERSION`) and is checked against the integrity hash pinned below. Kept: katex.min.js,
# katex.min.css, the LICENSE and the woff2 fonts (every current browser reads woff2; the woff and ttf
# copies would triple the size), with the CSS's woff/ttf fallbacks removed so that it names only the
# files shipped. docs/assets/katex/math.js (ours, not KaTeX's) typesets arithmatex's output.
set -euo pipefail

VERSION=0.19.1
INTEGRITY=sha512-jG8uKntjSEcm2EpQOh0XturpPuuC9r3Sq5HLHdsFdWZT27E672SF19QEi+of0/YeOy15lDgRhKvr5614uRrEfA==

cd "$(dirname "$0")"
target=assets/katex
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "katex@$VERSION" >/dev/null)
tarball="$work/katex-$VERSION.tgz"
actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
if [[ "$actual" != "$INTEGRITY" ]]; then
  echo "katex@$VERSION: integrity $actual, expected $INTEGRITY" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$work"
dist="$work/package/dist"

rm -rf "$target/fonts" "$target/katex.min.js" "$target/katex.min.css" "$target/LICENSE"
mkdir -p "$target/fonts"
cp "$dist/katex.min.js" "$work/package/LICENSE" "$target/"
cp "$dist"/fonts/*.woff2 "$target/fonts/"
sed -e 's/,url(fonts\/[A-Za-z0-9_-]*\.woff) format("woff"),url(fonts\/[A-Za-z0-9_-]*\.ttf) format("truetype")//g' \
  "$dist/katex.min.css" >"$target/katex.min.css"
if grep -qE '\.(woff|ttf)\)' "$target/katex.min.css"; then
  echo "katex.min.css still names woff or ttf fonts: the sed above no longer matches its layout" >&2
  exit 1
fi

cat >"$target/NOTICE" <<EOF
KaTeX $VERSION (https://katex.org), from the npm package katex@$VERSION ($INTEGRITY).
MIT license: see LICENSE in this folder. Copyright (c) 2013-2020 Khan Academy and other contributors.
Shipped: dist/katex.min.js, dist/katex.min.css (woff/ttf fallbacks removed) and dist/fonts/*.woff2.
Re-fetch with: bash docs/vendor_katex.sh
EOF
echo "KaTeX $VERSION in docs/$target ($(du -sh "$target" | cut -f1))"
