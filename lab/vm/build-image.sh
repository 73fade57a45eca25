#!/bin/bash
# build-image.sh — the tier-2 guest image: Debian bookworm (minbase) with the stock kernel
# (whose drbd.ko is DRBD 8.4.11), drbd-utils, MariaDB and the tools twinbeat calls.
#
#   sudo lab/vm/build-image.sh        prints the image directory on stdout
#
# Two cached stages in lab/vm/build (gitignored), each keyed by a hash of its inputs:
#   rootfs-HASH1.tar     debootstrap's result; HASH1 = package list, suite, mirror (slow stage)
#   image-HASH2/         {base.img,vmlinuz,initrd.img}; HASH2 = this whole script + HASH1
# so a change to the trimming, the initrd or the in-image init redoes only the fast stage, and
# an unchanged script returns at once.
# The image holds no twinbeat and no lab configuration: run.sh brings those in at boot on a small
# read-only ext4 disk (label tbpayload), so a code change needs no image rebuild. The image's
# init only mounts the basics and that disk and execs /tb/guest/init from it.
set -euo pipefail
# shellcheck source=lab/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $EUID -eq 0 ]] || die "run as root (debootstrap, chroot)"
# stdout carries only the answer (run.sh reads it with $(...)); every tool's chatter goes to
# stderr. mkfs.ext4 prints "Creating regular file ..." on stdout even with -q, and that once
# became part of the image path on a cold build.
exec 3>&1 1>&2

PACKAGES=linux-image-amd64,busybox,drbd-utils,kmod,iproute2,iputils-ping,procps,e2fsprogs,util-linux,psmisc,mariadb-server,mariadb-client,less
# The initrd only needs to find the root disk; everything else is loaded from the root fs.
INITRD_MODULES="virtio_pci virtio_blk ext4 crc32c_generic"

hash1=$(echo "$PACKAGES $SUITE $MIRROR" | sha256sum | cut -c1-16)
hash=$( { cat "${BASH_SOURCE[0]}"; echo "$hash1"; } | sha256sum | cut -c1-16)
TARBALL=$BUILD/rootfs-$hash1.tar
OUT=$BUILD/image-$hash
if [[ -s $OUT/base.img && -s $OUT/vmlinuz && -s $OUT/initrd.img && -e $OUT/done ]]; then
    log "image up to date: $OUT"
    echo "$OUT" >&3
    exit 0
fi

need_cmds debootstrap:debootstrap mkfs.ext4:e2fsprogs
mkdir -p "$BUILD"
ROOT=$BUILD/rootfs-$hash.tmp
# Only our own temporary tree; the chroot's /proc etc. are bind-free (debootstrap mounts and
# unmounts its own), but a failed run may leave them: unmount before deleting.
cleanup() {
    local m
    for m in proc sys dev/pts dev; do
        mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"
    done
    rm -rf "$ROOT"
}
trap cleanup EXIT
cleanup
t0=$SECONDS
if [[ ! -s $TARBALL ]]; then
    log "debootstrap $SUITE from $MIRROR into $ROOT (a few minutes)"
    nice -n 19 debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" \
        >"$BUILD/debootstrap.log" 2>&1 || die "debootstrap failed; see $BUILD/debootstrap.log"
    log "debootstrap took $((SECONDS - t0)) s; caching it as $TARBALL"
    nice -n 19 tar -C "$ROOT" --numeric-owner -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
else
    log "unpacking cached $TARBALL"
    mkdir -p "$ROOT"
    nice -n 19 tar -C "$ROOT" --numeric-owner -xf "$TARBALL"
fi

kver=$(basename "$(ls -d "$ROOT"/lib/modules/*)")
log "guest kernel $kver"

# The node names DRBD and MariaDB look up (hostname is set from the kernel command line).
cat >"$ROOT/etc/hosts" <<'HOSTS'
127.0.0.1 localhost
192.0.2.1 node-a
192.0.2.2 node-b
198.51.100.20 client
HOSTS
echo tbvm >"$ROOT/etc/hostname"

# Size: documentation, man pages, locales and the kernel's hardware drivers are dead weight here.
rm -rf "$ROOT"/usr/share/{doc,man,info,locale}/* "$ROOT"/var/cache/apt/archives/*.deb \
    "$ROOT"/var/lib/apt/lists/*
mods=$ROOT/lib/modules/$kver/kernel
rm -rf "$mods"/sound "$mods"/drivers/{gpu,media,net/wireless,net/ethernet,infiniband,staging,usb,bluetooth,iio,isdn,scsi,hid,thunderbolt,platform,hwmon,mmc,mtd,nfc,power,leds,ata,firewire,edac,input/touchscreen,input/misc,spi,i2c,comedi,target,video,w1,watchdog,pcmcia} \
    "$mods"/net/{wireless,mac80211,bluetooth,netfilter,sched} "$mods"/fs/{btrfs,xfs,ocfs2,nfs,nfsd,cifs,smb,ceph,f2fs,gfs2,jfs,reiserfs,nilfs2,ntfs3,ubifs,bcachefs} \
    "$ROOT"/lib/firmware/*
[[ -e $mods/drivers/block/drbd/drbd.ko ]] || die "drbd.ko missing from the guest kernel tree"

# Small initrd (LAB.md: 5.7 MiB instead of 35 MiB).
sed -i 's/^MODULES=.*/MODULES=list/' "$ROOT/etc/initramfs-tools/initramfs.conf"
tr ' ' '\n' <<<"$INITRD_MODULES" >"$ROOT/etc/initramfs-tools/modules"
mount -t proc proc "$ROOT/proc"
nice -n 19 chroot "$ROOT" depmod -a "$kver"
nice -n 19 chroot "$ROOT" update-initramfs -u -k "$kver" >>"$BUILD/debootstrap.log" 2>&1 ||
    die "update-initramfs failed; see $BUILD/debootstrap.log"
umount "$ROOT/proc"

# The in-image init: the basics, the payload disk, then the lab's own init from it.
cat >"$ROOT/sbin/tb-init" <<'INIT'
#!/bin/bash
# PID 1 of a tier-2 lab guest (lab/vm/build-image.sh). Kept tiny on purpose: all lab logic is on
# the payload disk (label tbpayload), which changes without an image rebuild.
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -o remount,rw /
dmesg -n 1
mkdir -p /tb
if mount -o ro LABEL=tbpayload /tb && [[ -x /tb/guest/init ]]; then
    exec /tb/guest/init
fi
echo "tb-init: no payload disk (label tbpayload); falling back to a shell" >/dev/console
exec bash </dev/console >/dev/console 2>&1
INIT
chmod 755 "$ROOT/sbin/tb-init"

mkdir -p "$OUT.tmp"
cp "$ROOT/boot/vmlinuz-$kver" "$OUT.tmp/vmlinuz"
cp "$ROOT/boot/initrd.img-$kver" "$OUT.tmp/initrd.img"
rm -f "$ROOT"/boot/initrd.img-*
size_mb=$(( $(du -sm "$ROOT" | cut -f1) * 13 / 10 + 100 ))
log "mkfs.ext4 -d (${size_mb} MiB)"
nice -n 19 mkfs.ext4 -q -F -L tbroot -d "$ROOT" "$OUT.tmp/base.img" "${size_mb}M"
echo "$kver" >"$OUT.tmp/kernel-version"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
touch "$OUT/done"
log "image built in $((SECONDS - t0)) s: $OUT ($(du -sh --apparent-size "$OUT/base.img" | cut -f1), initrd $(du -h "$OUT/initrd.img" | cut -f1))"
echo "$OUT" >&3
