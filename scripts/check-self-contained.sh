#!/usr/bin/env bash
# A clone of this repository must build and test on its own. Fails when
#   * a file in the repository refers to the `shared` folder beside it (reading material that
#     only the original development machines have); the one exception is the optional offline
#     RustSec database in it, `advisory-db`, which scripts/deny.sh uses when present and never
#     requires;
#   * a comment or document cites a section of docs/design.md that the document lacks;
#   * a test fixture's content differs from tests/fixtures/SHA256SUMS.
set -euo pipefail
cd "$(dirname "$0")/.."
rc=0

# Tracked and untracked files alike (a file not yet committed would land with the next commit);
# ignored files (target/) are not part of a clone.
refs=$(git grep --untracked -n -E '\.\./shared' -- . | grep -v -E '\.\./shared/advisory-db' || true)
if [ -n "$refs" ]; then
  printf 'these refer to the shared folder beside the repository, which a clone does not have (copy what is needed into the repo):\n%s\n' "$refs"
  rc=1
fi

# Every "design.md §N" must name a "## N." heading of docs/design.md.
sections=$(grep -oE '^## [0-9]+\.' docs/design.md | grep -oE '[0-9]+' | sort -u)
while IFS= read -r hit; do
  [ -n "$hit" ] || continue
  n=${hit##*§}
  if ! grep -qx "$n" <<<"$sections"; then
    echo "cites a section docs/design.md does not have: $hit"
    rc=1
  fi
done < <(git grep --untracked -h -o -E 'design\.md §[0-9]+' -- . | sort -u)

if ! (cd tests/fixtures && sha256sum --check --quiet SHA256SUMS); then
  echo "a test fixture differs from tests/fixtures/SHA256SUMS (fixtures are used as they are)"
  rc=1
fi

[ "$rc" = 0 ] && echo "self-contained: no references outside the repository, design.md citations resolve, fixtures intact"
exit "$rc"
