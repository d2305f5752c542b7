"""The paper's reported figures (docs/paper-reading.md), which the report puts ours beside.

The paper contradicts itself on "Ours": Table 1 (x2: 45.67 dB), Table 2 (x2: 46.56 dB) and the
summary (45.46 / 37.65 / 34.09 dB) disagree. The report compares against Table 2 for Table 2 and
Table 1 for Table 1, and lists the summary's figures beside them.
"""

from __future__ import annotations

# Table 1, x2, N = 9: strategy -> (PSNR, SSIM)
TABLE1 = {"single": (45.33, 0.9899), "double": (45.56, 0.9943), "multi": (45.67, 0.9945)}

# Table 2: method -> scale -> (PSNR, SSIM). The x2 SSIM row is garbled in the text; these are the
# most consistent reading (docs/paper-reading.md).
TABLE2 = {
    "bicubic": {2: (40.55, 0.9871), 3: (35.12, 0.9414), 4: (32.31, 0.9216)},
    "srcnn": {2: (44.96, 0.9775), 3: (36.73, 0.9610), 4: (33.92, 0.9320)},
    "espcn": {2: (44.39, 0.9659), 3: (36.27, 0.9545), 4: (33.53, 0.9338)},
    "fsrcnn": {2: (43.46, 0.9908), 3: (37.52, 0.9657), 4: (34.25, 0.9320)},
    "decnn": {2: (44.26, 0.9911), 3: (36.34, 0.9641), 4: (32.60, 0.9344)},
    "fscwn": {2: (44.03, 0.9911)},
    "proposed": {2: (46.56, 0.9987), 3: (38.75, 0.9696), 4: (35.39, 0.9389)},
}

# The abstract/summary's figures for "Ours" (contradicting Table 2).
SUMMARY_OURS = {2: (45.46, 0.9914), 3: (37.65, 0.9689), 4: (34.09, 0.9397)}

# Table 3: CPU seconds per image (Xeon E5 v3, 2.4 GHz, 16 threads).
TABLE3_CPU = ('Intel Xeon "E5-2360 v3" 2.40 GHz x 16, no GPU (no such model exists; the E5-2630 v3, 8 cores / '
              '16 threads at 2.4 GHz, is the likely one); image size and thread count not stated')
TABLE3 = {
    "srcnn": {2: 0.23, 3: 0.21, 4: 0.24},
    "fsrcnn": {2: 0.13, 3: 0.08, 4: 0.07},
    "espcn": {2: 0.05, 3: 0.04, 4: 0.03},
    "decnn": {2: 1.16, 3: 1.14, 4: 1.13},
    "fscwn": {2: 1.29},
    "proposed": {2: 1.02, 3: 0.47, 4: 0.32},
}

STRATEGY_NAMES = {"single": "Single upsampling", "double": "Double upsampling", "multi": "Multi-resolution upsampling"}
