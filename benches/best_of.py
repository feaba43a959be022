"""Per-case minimum of every timing column over several `benches/compare.sh` logs.

    python3 benches/best_of.py LOG [LOG ...]

On a shared machine a median can only be too slow, never too fast, so the smallest median of
several rounds is the closest to the unloaded cost. Ratios are recomputed from the minima.
"""

import math
import re
import sys

best = {}
order = []
for path in sys.argv[1:]:
    for line in open(path):
        m = re.match(r"^(\S.*?\S)\s{2,}([-\d. NaN]+)$", line.rstrip())
        if not m or line.startswith("case"):
            continue
        nums = m.group(2).split()
        if len(nums) < 6:
            continue
        v = [float(x) for x in nums]
        # fwd stock, fwd fast, x, f+b stock, f+b fast, x[, fwd pt, /pt, f+b pt, /pt]
        cols = [v[0], v[1], v[3], v[4]] + ([v[6], v[8]] if len(v) >= 10 else [math.nan, math.nan])
        name = m.group(1)
        if name not in best:
            best[name] = cols
            order.append(name)
        else:
            best[name] = [min(a, b) if not math.isnan(b) else a for a, b in zip(best[name], cols)]

print(f"{'case':<44} {'fwd stock':>9} {'fwd fast':>9} {'x':>5} {'fwd pt':>7} {'fast/pt':>7} | "
      f"{'f+b stock':>9} {'f+b fast':>9} {'x':>5} {'f+b pt':>7} {'fast/pt':>7}")
for n in order:
    sf, ff, sb, fb, pf, pb = best[n]
    print(f"{n:<44} {sf:>9.2f} {ff:>9.2f} {sf / ff:>5.1f} {pf:>7.2f} {ff / pf:>7.2f} | "
          f"{sb:>9.2f} {fb:>9.2f} {sb / fb:>5.1f} {pb:>7.2f} {fb / pb:>7.2f}")
