# Source me from a script after declaring its variables: turns `--foo-bar value` / `--foo-bar=value` into
# foo_bar=value for variables the script already declared (a typo is an error, not a silent new variable).
# `--help` / `-h` calls the script's `usage` function when it has one. A variable declared true or false is a
# boolean: it takes true or false only (`--dry-run yes` is an error, not a silent false).

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help)
      if declare -F usage >/dev/null; then usage; else echo "usage: $0 [--option value ...]"; fi
      exit 0 ;;
    --*=*) _name=${1%%=*}; _value=${1#*=}; shift ;;
    --*)
      _name=$1
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      _value=$2; shift 2 ;;
    *) echo "$0: unexpected argument '$1' (options look like --name value)" >&2; exit 1 ;;
  esac
  _var=${_name#--}
  _var=${_var//-/_}
  if ! declare -p "$_var" >/dev/null 2>&1; then
    echo "$0: unknown option $_name" >&2
    exit 1
  fi
  case "${!_var}" in
    true|false)
      if [ "$_value" != true ] && [ "$_value" != false ]; then
        echo "$0: option $_name takes true or false, got '$_value'" >&2
        exit 1
      fi ;;
  esac
  printf -v "$_var" '%s' "$_value"
done
unset _name _value _var
