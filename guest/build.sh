#!/bin/sh
# Builds guest/build/drover-guest.elf from boot.S + guest.c with the machine's gcc and binutils.
# Idempotent: does nothing when the ELF is newer than every source. Usage: guest/build.sh [-f]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/build/drover-guest.elf"
if [ "${1:-}" != "-f" ] && [ -f "$out" ] && [ "$out" -nt "$here/boot.S" ] && [ "$out" -nt "$here/guest.c" ] \
   && [ "$out" -nt "$here/link.ld" ] && [ "$out" -nt "$here/build.sh" ]; then
  exit 0
fi
mkdir -p "$here/build"
tmp=$(mktemp -d "$here/build/tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
CFLAGS="-m32 -march=i686 -ffreestanding -fno-pic -fno-pie -fno-stack-protector -fno-builtin -nostdlib -O2 -Wall -Wextra"
${CC:-gcc} $CFLAGS -c "$here/boot.S" -o "$tmp/boot.o"
${CC:-gcc} $CFLAGS -c "$here/guest.c" -o "$tmp/guest.o"
${LD:-ld} -m elf_i386 -nostdlib --no-warn-rwx-segments -T "$here/link.ld" -o "$tmp/drover-guest.elf" "$tmp/boot.o" "$tmp/guest.o"
mv "$tmp/drover-guest.elf" "$out" # atomic: a concurrent user never sees a half-written file
