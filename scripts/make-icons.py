#!/usr/bin/python3
"""Draws the app icon (a shield with a meter needle) and writes the Tauri icon set to icons/.

Run: python3 scripts/make-icons.py   (needs Pillow: apt install python3-pil)
"""
import math
import os
import sys

from PIL import Image, ImageDraw

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "icons")


def draw(size: int) -> Image.Image:
    s = 1024
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    # Shield outline.
    top, bottom, left, right = 90, 950, 150, 874
    mid = s // 2
    shield = [(left, top + 80), (mid, top), (right, top + 80), (right, 480),
              (mid + 260, 800), (mid, bottom), (mid - 260, 800), (left, 480)]
    d.polygon(shield, fill=(22, 94, 131, 255))
    inner = [(x + (mid - x) * 0.12, y + (560 - y) * 0.12) for x, y in shield]
    d.polygon(inner, fill=(235, 246, 250, 255))
    # Meter dial: an arc with a needle.
    cx, cy, r = mid, 560, 250
    d.arc([cx - r, cy - r, cx + r, cy + r], start=200, end=340, fill=(22, 94, 131, 255), width=56)
    for k in range(5):
        a = math.radians(200 + k * 35)
        d.line([(cx + (r - 90) * math.cos(a), cy + (r - 90) * math.sin(a)),
                (cx + (r - 40) * math.cos(a), cy + (r - 40) * math.sin(a))],
               fill=(22, 94, 131, 255), width=22)
    a = math.radians(300)
    d.line([(cx, cy), (cx + (r - 60) * math.cos(a), cy + (r - 60) * math.sin(a))],
           fill=(214, 96, 28, 255), width=44)
    d.ellipse([cx - 48, cy - 48, cx + 48, cy + 48], fill=(214, 96, 28, 255))
    return img.resize((size, size), Image.LANCZOS)


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    for name, size in [("32x32.png", 32), ("128x128.png", 128), ("128x128@2x.png", 256),
                       ("icon.png", 512)]:
        draw(size).save(os.path.join(OUT, name))
    big = draw(1024)
    big.save(os.path.join(OUT, "icon.ico"), sizes=[(16, 16), (24, 24), (32, 32), (48, 48),
                                                    (64, 64), (128, 128), (256, 256)])
    try:
        big.save(os.path.join(OUT, "icon.icns"))
    except Exception as e:  # Pillow without ICNS writing
        print(f"icon.icns not written: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
