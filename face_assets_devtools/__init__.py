"""Developer tools of face_assets, shared by the tests and the scripts (scripts/), never imported
by the product (face_assets/): throwaway PostgreSQL, MariaDB and Redis servers (servers), real
video clips made from photos (clips), a multi-process deployment of the daemon, a broker and
Celery workers (deployment), a large synthetic library and a harness for Dagster batch runs over
it (library), labelled phone-size photos and many-face frames (phone_photos), and the scripts'
small harness: timing medians, `--json PATH` reports and throwaway databases (harness)."""
