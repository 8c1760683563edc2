#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for trying `hydra/launcher=slurm` sweeps and for the slow tests.
#   sudo scripts/local_slurm.sh start     # install Debian's slurm + munge if needed, start munged, slurmctld, slurmd
#   scripts/local_slurm.sh status         # exit 0 and print sinfo when up, exit 1 when not
#   eval "$(scripts/local_slurm.sh env)"  # SLURM_CONF for this shell (start also links /etc/slurm/slurm.conf)
#   sudo scripts/local_slurm.sh stop      # cancel its jobs, stop the daemons; packages and state dir stay
# Everything (slurm.conf, munge key and socket, state, spool, logs, pid files) lives under
# HYDRAHEAD_SLURM_DIR (default /tmp/hydrahead-slurm). HYDRAHEAD_SLURM_CPUS sets the node's CPU count
# (default max(nproc, 8): more than the cores, so small array jobs run side by side on a laptop).
# Exit codes: 0 ok; 1 the cluster did not come up (log tails printed); 2 no SLURM here (not root, or the
# packages are missing and cannot be installed).
set -euo pipefail

DIR="${HYDRAHEAD_SLURM_DIR:-/tmp/hydrahead-slurm}"
CONF="$DIR/slurm.conf"
MUNGE_DIR="$DIR/munge"
SOCKET="$MUNGE_DIR/munge.socket.2"
SYSTEM_CONF=/etc/slurm/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge)
PARTITION=debug
export PATH="$PATH:/usr/sbin:/sbin"
export SLURM_CONF="$CONF"

say() { echo "local_slurm: $*"; }
die() {
	local code=$1
	shift
	echo "local_slurm: $*" >&2
	exit "$code"
}

installed() { command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null &&
	command -v munged >/dev/null; }

install_packages() {
	installed && return 0
	[[ $EUID -eq 0 ]] || die 2 "SLURM is not installed (${PACKAGES[*]}) and installing it needs root: sudo $0 start"
	command -v apt-get >/dev/null || die 2 "SLURM is not installed and there is no apt-get to install ${PACKAGES[*]}"
	say "installing ${PACKAGES[*]} with apt-get"
	local log
	log=$(mktemp)
	export DEBIAN_FRONTEND=noninteractive
	# Package lists first only when the install fails (a fresh image may have none, or stale ones).
	if ! apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >"$log" 2>&1; then
		if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } >"$log" 2>&1; then
			tail -n 20 "$log" >&2
			rm -f "$log"
			die 2 "apt-get could not install ${PACKAGES[*]}"
		fi
	fi
	rm -f "$log"
	installed || die 2 "apt-get installed ${PACKAGES[*]} but slurmctld/slurmd/sbatch/munged are not on PATH"
}

# pid_alive NAME PIDFILE: the pid file's process is running and is NAME (not a recycled pid).
pid_alive() {
	local pid
	[[ -s $2 ]] || return 1
	pid=$(<"$2")
	[[ -r /proc/$pid/comm ]] && [[ $(</proc/"$pid"/comm) == "$1"* ]]
}

node_state() { sinfo -h -o %T 2>/dev/null | head -n 1 || true; }

up() {
	pid_alive slurmctld "$DIR/slurmctld.pid" && pid_alive slurmd "$DIR/slurmd.pid" &&
		[[ $(node_state) =~ ^(idle|mixed|allocated|completing) ]]
}

log_tails() {
	local f
	for f in "$MUNGE_DIR/munged.log" "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log"; do
		[[ -f $f ]] || continue
		echo "--- $f (last 20 lines)" >&2
		tail -n 20 "$f" >&2
	done
}

start_munge() {
	if pid_alive munged "$MUNGE_DIR/munged.pid"; then
		return 0
	fi
	# Its own key, socket and files under $DIR, so a host munged (with the site's key) is left alone.
	# munged refuses a key or log readable by others and dirs writable by others; /tmp's sticky bit is fine.
	install -d -o munge -g munge -m 0755 "$MUNGE_DIR"
	if [[ ! -s $MUNGE_DIR/munge.key ]]; then
		head -c 1024 /dev/urandom >"$MUNGE_DIR/munge.key"
	fi
	chown munge:munge "$MUNGE_DIR/munge.key"
	chmod 0400 "$MUNGE_DIR/munge.key"
	runuser -u munge -- munged --key-file="$MUNGE_DIR/munge.key" --socket="$SOCKET" \
		--pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
		--seed-file="$MUNGE_DIR/munged.seed" ||
		{
			log_tails
			die 1 "munged did not start"
		}
	local _
	for _ in $(seq 50); do
		[[ -S $SOCKET ]] && munge -n -S "$SOCKET" | unmunge -S "$SOCKET" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	log_tails
	die 1 "munged started but $SOCKET does not answer"
}

write_conf() {
	local host cpus mem_mb
	host=$(hostname -s)
	cpus=${HYDRAHEAD_SLURM_CPUS:-$(($(nproc) > 8 ? $(nproc) : 8))}
	# MemTotal less 10% (at least 512 MB) of headroom, so `--mem` requests up to it are accepted.
	mem_mb=$(awk '/^MemTotal:/ {m = int($2 / 1024); h = int(m / 10); if (h < 512) h = 512; print m - h}' /proc/meminfo)
	mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
	cat >"$CONF.tmp" <<EOF
# Written by scripts/local_slurm.sh: a single-node cluster on $host, state under $DIR.
ClusterName=hydrahead
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# The node's CPUs and memory below are taken as configured, not checked against the hardware.
SlurmdParameters=config_overrides
ReturnToService=2
MaxArraySize=10001
MaxJobCount=100000
KillWait=30
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=120
SlurmdTimeout=300
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
	mv "$CONF.tmp" "$CONF"
}

# /etc/slurm/slurm.conf -> $CONF, so every shell (and every user) reaches this cluster without SLURM_CONF.
link_system_conf() {
	mkdir -p "$(dirname "$SYSTEM_CONF")"
	if [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]] && [[ $(readlink "$SYSTEM_CONF" || true) != "$CONF" ]]; then
		if [[ ! -e $SYSTEM_CONF.hydrahead-backup ]]; then
			mv "$SYSTEM_CONF" "$SYSTEM_CONF.hydrahead-backup"
			say "moved the existing $SYSTEM_CONF to $SYSTEM_CONF.hydrahead-backup"
		else
			rm -f "$SYSTEM_CONF"
		fi
	fi
	ln -sfn "$CONF" "$SYSTEM_CONF"
}

unlink_system_conf() {
	[[ $(readlink "$SYSTEM_CONF" 2>/dev/null || true) == "$CONF" ]] || return 0
	rm -f "$SYSTEM_CONF"
	if [[ -e $SYSTEM_CONF.hydrahead-backup ]]; then
		mv "$SYSTEM_CONF.hydrahead-backup" "$SYSTEM_CONF"
		say "restored $SYSTEM_CONF"
	fi
}

cmd_start() {
	install_packages
	[[ $EUID -eq 0 ]] || die 2 "starting the daemons needs root (slurmd launches jobs as their user): sudo $0 start"
	if up; then
		say "already up ($CONF)"
		sinfo
		return 0
	fi
	mkdir -p "$DIR"
	chmod 0755 "$DIR"
	start_munge
	write_conf
	link_system_conf
	pid_alive slurmctld "$DIR/slurmctld.pid" || slurmctld -f "$CONF" || {
		log_tails
		die 1 "slurmctld did not start"
	}
	pid_alive slurmd "$DIR/slurmd.pid" || slurmd -f "$CONF" -N "$(hostname -s)" || {
		log_tails
		die 1 "slurmd did not start"
	}
	local state="" _
	for _ in $(seq 60); do
		state=$(node_state)
		if [[ $state =~ ^(idle|mixed|allocated) ]]; then
			say "up: partition $PARTITION, $CONF (also $SYSTEM_CONF)"
			sinfo
			return 0
		fi
		[[ $state =~ ^(drain|inval|down) ]] && break
		sleep 0.5
	done
	sinfo -R >&2 || true
	log_tails
	die 1 "the node is not idle after 30 s (state: ${state:-no answer from slurmctld})"
}

# stop_daemon NAME PIDFILE: SIGTERM, then SIGKILL after 10 s.
stop_daemon() {
	pid_alive "$1" "$2" || return 0
	local pid _
	pid=$(<"$2")
	kill "$pid"
	# Wait for the process, not its pid file: the daemons remove that before they have finished exiting.
	for _ in $(seq 100); do
		[[ -d /proc/$pid ]] && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null || {
			say "stopped $1"
			return 0
		}
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	say "killed $1"
}

cmd_stop() {
	[[ $EUID -eq 0 ]] || die 2 "stopping the daemons needs root: sudo $0 stop"
	if pid_alive slurmctld "$DIR/slurmctld.pid"; then
		# Jobs first, so no slurmstepd outlives its slurmd.
		local jobs _
		jobs=$(squeue -h -o %A 2>/dev/null || true)
		if [[ -n $jobs ]]; then
			# shellcheck disable=SC2086
			scancel $jobs 2>/dev/null || true
			for _ in $(seq 40); do
				[[ -z $(squeue -h -o %A 2>/dev/null || true) ]] && break
				sleep 0.5
			done
		fi
	fi
	stop_daemon slurmd "$DIR/slurmd.pid"
	stop_daemon slurmctld "$DIR/slurmctld.pid"
	stop_daemon munged "$MUNGE_DIR/munged.pid"
	unlink_system_conf
	say "down (state and logs kept in $DIR)"
}

cmd_status() {
	if [[ -f $CONF ]] && up; then
		sinfo
		return 0
	fi
	echo "local_slurm: not running (HYDRAHEAD_SLURM_DIR=$DIR)" >&2
	return 1
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) echo "export SLURM_CONF=$CONF" ;;
*)
	echo "usage: $0 start|stop|status|env   (state under HYDRAHEAD_SLURM_DIR, default /tmp/hydrahead-slurm)" >&2
	exit 64
	;;
esac
