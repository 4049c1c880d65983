# apt_get: apt-get, one caller at a time. The packaging tests install Debian packages from two
# scripts at once (the musl CPython's and the containers'), and apt-get gives up at once when
# another holds its lock: each call waits for the others here, and for any other apt on the
# machine for up to 10 minutes.
apt_get() {
  DEBIAN_FRONTEND=noninteractive flock /var/lock/toolgate-apt.lock \
    apt-get -o DPkg::Lock::Timeout=600 "$@"
}
