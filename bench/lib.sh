# Shared by the parts of `just bench` that append a section to docs/benchmarks.md
# (bench/images.sh, bench/memory.sh, bench/lifecycle.sh). Source it; it defines functions only.

# replace_section BEGIN_MARK END_MARK SECTION_FILE OUT
# Appends SECTION_FILE (which starts with BEGIN_MARK and ends with END_MARK) to OUT, after
# removing a section between the same marks that an earlier run left there; what other
# parts wrote is kept, with exactly one blank line before the section.
replace_section() {
    local begin=$1 end=$2 section=$3 out=$4
    if [ -f "$out" ]; then
        awk -v b="$begin" -v e="$end" '$0==b{skip=1} !skip{print} $0==e{skip=0}' "$out" >"$out.tmp"
        sed -i -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$out.tmp"
        echo >>"$out.tmp"
    else
        : >"$out.tmp"
    fi
    cat "$section" >>"$out.tmp"
    mv "$out.tmp" "$out"
}
