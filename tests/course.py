"""Facts about the course material in ../shared/data/cse546, shared by the tests."""

from __future__ import annotations

# Who is in each course clip (shared/README.md); majors and years come from the table.
COURSE_CLIPS = {
    "test_0.mp4": "president_trump",
    "test_1.mp4": "president_biden",
    "test_2.mp4": "mr_bean",
    "test_4.mp4": "johnny_dep",
    "test_5.mp4": "vin_diesel",
    "test_6.mp4": "floki",
    "test_7.mp4": "morgan_freeman",
    "test_8.mp4": "president_obama",
}
