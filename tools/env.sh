# Source this file (bash/zsh) to use the project's Pulumi toolchain:
#   . tools/env.sh
# With a locally built toolchain (.tools/mode = local, see
# tools/build-toolchain.sh) it puts .tools/bin first on PATH and points
# PULUMI_HOME at the project-local plugin store, with automatic plugin
# acquisition off. With a system pulumi (.tools/mode = system) only the update
# check is silenced and the CLI's own PULUMI_HOME/plugin acquisition is used.
# PULUMI_CONFIG_PASSPHRASE is deliberately not set here (the Makefile does).

if [ -n "${BASH_SOURCE:-}" ]; then
  _pveceph_tools_src=${BASH_SOURCE[0]}
elif [ -n "${ZSH_VERSION:-}" ]; then
  # shellcheck disable=SC2296
  _pveceph_tools_src=${(%):-%x}
else
  _pveceph_tools_src=$0
fi
_pveceph_root=$(cd "$(dirname "$_pveceph_tools_src")/.." && pwd)
_pveceph_mode=local
if [ -f "$_pveceph_root/.tools/mode" ]; then
  _pveceph_mode=$(cat "$_pveceph_root/.tools/mode")
fi

export PULUMI_SKIP_UPDATE_CHECK=true
if [ "$_pveceph_mode" != system ]; then
  case ":$PATH:" in
    *":$_pveceph_root/.tools/bin:"*) ;;
    *) PATH="$_pveceph_root/.tools/bin:$PATH" ;;
  esac
  export PATH
  export PULUMI_HOME="$_pveceph_root/.tools/pulumi-home"
  export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
fi
unset _pveceph_tools_src _pveceph_root _pveceph_mode
