"""Persons: a batch's faces matched to known persons, and the clustering of all faces."""

import base64
from typing import Any, Literal, get_origin

import dagster as dg
from pydantic import Field, ValidationError, create_model

from face_assets.assets.embeddings import face_embeddings
from face_assets.assets.leases import batch_lease, fail_runs_taken_over, run_owner
from face_assets.assets.metadata import table_preview
from face_assets.assets.thumbnails import face_thumbnails
from face_assets.core.batch import parse_batch_key
from face_assets.core.clustering.params import ClusterParams, knobs, setting_name, with_overrides
from face_assets.core.gallery import write_map
from face_assets.core.person import match_new_faces, rebuild_persons, update_persons
from face_assets.core.settings import given, one_line
from face_assets.partitions import media_item_partitions
from face_assets.resources import ClusteringResource, FaceStoreResource, ThumbnailStoreResource


def _overrides() -> type[dg.Config]:
    """One optional field per clustering knob (ClusterParams'), unset taking the setting."""
    fields: dict[str, Any] = {}
    for name, info in knobs().items():
        kind = str if get_origin(info.annotation) is Literal else info.annotation
        described = f"{info.description}; unset: the setting FACE_ASSETS_{str(setting_name(info)).upper()}"
        fields[name] = (kind | None, Field(None, description=described))
    return create_model("ClusterOverrides", __base__=dg.Config, **fields)


class PersonClustersConfig(_overrides()):  # type: ignore[misc]
    """A run's overrides of the clustering resource: unset fields (None) take its settings."""

    mode: str | None = None  # match_then_cluster or rebuild

    def params(self, clustering: ClusteringResource, model: str | None = None) -> ClusterParams:
        overrides = given(self.model_dump(exclude={"mode"}))
        try:
            return with_overrides(clustering.params(model), overrides)
        except ValidationError as error:
            raise dg.Failure(f"person_clusters config: {one_line(error)}") from None

    def resolved_mode(self, clustering: ClusteringResource) -> str:
        mode = self.mode or clustering.resolved_mode()  # None or "": as `given`
        if mode not in ("match_then_cluster", "rebuild"):
            raise dg.Failure(f"unknown clustering mode {mode!r}: use match_then_cluster or rebuild")
        return str(mode)


# After the thumbnails too: their sharpness tells the faces too poor to match.
@dg.asset(group_name="persons", deps=[face_embeddings, face_thumbnails], partitions_def=media_item_partitions)
def face_persons(
    context: dg.AssetExecutionContext, face_store: FaceStoreResource, clustering: ClusteringResource
) -> dg.MaterializeResult:
    """The batch's new faces joined to the existing persons they match; the others wait."""
    store = face_store.get_store()
    params = clustering.params(store.any_embedding_model())
    with batch_lease(context, store):
        batch = parse_batch_key(context.partition_key)
        match = match_new_faces(store, params, batch, owner=run_owner(context))
        fail_runs_taken_over(context, store)
    return dg.MaterializeResult(
        metadata={
            "unassigned_faces_in_batch": match.faces,
            "matched_to_existing_persons": match.matched,
            "waiting_for_clustering": match.waiting,
            "waiting_too_poor_to_match": match.too_poor,
            **match.changes.metadata(),
            "match_threshold": match.match_threshold,
            "seconds": round(match.seconds, 2),
        }
    )


@dg.asset(
    group_name="persons",
    deps=[dg.AssetDep(face_persons, partition_mapping=dg.AllPartitionMapping())],
)
def person_clusters(
    context: dg.AssetExecutionContext,
    config: PersonClustersConfig,
    face_store: FaceStoreResource,
    clustering: ClusteringResource,
    thumbnails: ThumbnailStoreResource,
) -> dg.MaterializeResult:
    """Persons over all faces: unassigned faces join the person they match, the rest are clustered."""
    store = face_store.get_store()
    params = config.params(clustering, store.any_embedding_model())
    context.log.info(f"clustering with {params}")
    mode = config.resolved_mode(clustering)
    cluster = rebuild_persons if mode == "rebuild" else update_persons
    update = cluster(store, params, owner=run_owner(context))
    fail_runs_taken_over(context, store)
    map_png = thumbnails.gallery_folder() / "map.png"
    projection = write_map(store, map_png, thumbnails.gallery_map_method())
    picture = base64.b64encode(map_png.read_bytes()).decode("ascii")
    return dg.MaterializeResult(
        metadata={
            "faces": update.faces,
            "matched_to_existing_persons": update.matched_to_existing,
            "new_persons": update.new_persons,
            "faces_in_new_persons": update.faces_in_new_persons,
            "unassigned_faces": update.unassigned,
            "unassigned_too_poor_to_compare": update.too_poor,
            "persons_total": update.persons_total,
            **update.changes.metadata(),
            "mode": mode,
            "clustering_ran": update.clustered,
            "seconds": round(update.seconds, 2),
            "algorithm": params.algorithm,
            "link_threshold": params.link_threshold,
            "match_threshold": params.match_threshold,
            "min_sharpness": params.min_sharpness,
            # Ids and counts only: names are personal data, and a forgotten person's would stay
            # in Dagster's event log for good.
            "persons_preview": table_preview(store.person_summary(), ["Id", "faces"]),
            "map": dg.MetadataValue.md(
                f"![faces coloured by person ({projection})](data:image/png;base64,{picture})"
            ),
            "map_file": dg.MetadataValue.path(str(map_png)),
            "gallery": dg.MetadataValue.path(str(thumbnails.gallery_folder() / "index.html")),
        }
    )
