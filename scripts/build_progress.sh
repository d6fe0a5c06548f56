# shellcheck shell=bash
# build_progress.sh - sourced by install.sh and test.sh (bash): ferry_build runs
# `cmake --build ARGS...` and shows how far it is. On a terminal one line, rewritten in place,
# gives the percentage and the file being built; in a log (CI) a line appears at every tenth of
# the way. Compiler warnings and errors, and any other line, pass through whole. Returns the
# status of cmake --build.
ferry_build() {
  local tty=0
  [ -t 1 ] && tty=1
  cmake --build "$@" 2>&1 | {
    local line pct verb what shown=-1 re_make='^\[ *([0-9]+)%\] (Building|Linking|Built target) ?(.*)$'
    local re_ninja='^\[([0-9]+)/([0-9]+)\] (Building|Linking) ?(.*)$'
    while IFS= read -r line; do
      if [[ $line =~ $re_make ]]; then
        pct=${BASH_REMATCH[1]}
        verb=${BASH_REMATCH[2]}
        what=${BASH_REMATCH[3]}
      elif [[ $line =~ $re_ninja ]]; then
        pct=$(( BASH_REMATCH[1] * 100 / BASH_REMATCH[2] ))
        verb=${BASH_REMATCH[3]}
        what=${BASH_REMATCH[4]}
      else
        [ $tty -eq 1 ] && printf '\r\033[K'
        printf '%s\n' "$line"
        continue
      fi
      what=${what##* }
      what=${what##*/}
      what=${what%.o}
      case $verb in
        Building) what="building $what" ;;
        Linking) what="linking $what" ;;
        *) what="built $what" ;;
      esac
      if [ $tty -eq 1 ]; then
        printf '\r\033[K    [%3d%%] %.60s' "$pct" "$what"
      elif [ $(( pct / 10 )) -gt $shown ]; then
        shown=$(( pct / 10 ))
        printf '    [%3d%%] %s\n' "$pct" "$what"
      fi
    done
    [ $tty -eq 1 ] && printf '\r\033[K'
    true
  }
  return "${PIPESTATUS[0]}"
}
