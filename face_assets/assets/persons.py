"""Persons: faces matched to known persons, the rest clustered."""

import dagster as dg

from face_assets.assets.embeddings import face_embeddings
from face_assets.assets.metadata import table_preview
from face_assets.core.clustering.cluster import ClusterParams
from face_assets.core.person import update_persons
from face_assets.core.settings import get_settings
from face_assets.resources import FaceStoreResource


class PersonClustersConfig(dg.Config):
    """Empty values take the settings (FACE_ASSETS_CLUSTER_*, FACE_ASSETS_MATCH_THRESHOLD)."""

    algorithm: str = ""
    link_threshold: float = -2.0
    min_cluster_size: int = 0
    min_samples: int = 0
    eps: float = 0.0
    match_threshold: float = -2.0

    def params(self) -> ClusterParams:
        s = get_settings()
        return ClusterParams(
            algorithm=(self.algorithm or s.cluster_algorithm),  # type: ignore[arg-type]
            link_threshold=self.link_threshold if self.link_threshold > -1 else s.cluster_link_threshold,
            min_cluster_size=self.min_cluster_size or s.cluster_min_size,
            min_samples=self.min_samples or s.cluster_min_samples,
            eps=self.eps or s.cluster_eps,
            match_threshold=self.match_threshold if self.match_threshold >= -1 else s.match_threshold,
            use_umap=s.cluster_use_umap,
        )


@dg.asset(group_name="persons", deps=[face_embeddings], pool="person_clusters")
def person_clusters(
    context: dg.AssetExecutionContext, config: PersonClustersConfig, face_store: FaceStoreResource
) -> dg.MaterializeResult:
    """Persons: new faces join the person they match, the rest are clustered into new persons."""
    params = config.params()
    store = face_store.get_store()
    update = update_persons(store, params)
    context.log.info(f"clustering with {params}")
    return dg.MaterializeResult(
        metadata={
            "faces": update.faces,
            "matched_to_existing_persons": update.matched_to_existing,
            "new_persons": update.new_persons,
            "faces_in_new_persons": update.faces_in_new_persons,
            "unassigned_faces": update.unassigned,
            "persons_total": update.persons_total,
            "clustering_ran": update.clustered,
            "seconds": round(update.seconds, 2),
            "algorithm": params.algorithm,
            "link_threshold": params.link_threshold,
            "match_threshold": params.match_threshold,
            "persons_preview": table_preview(store.person_summary(), ["Id", "Name", "faces"]),
        }
    )
