"""The 30 GTEx tissues of the IsoFormer data set, in its published column order."""

__all__ = ["GTEX_TISSUES"]

GTEX_TISSUES: tuple[str, ...] = (
    "Adipose Tissue", "Adrenal Gland", "Bladder", "Blood", "Blood Vessel", "Brain", "Breast",
    "Cervix Uteri", "Colon", "Esophagus", "Fallopian Tube", "Heart", "Kidney", "Liver", "Lung",
    "Muscle", "Nerve", "Ovary", "Pancreas", "Pituitary", "Prostate", "Salivary Gland", "Skin",
    "Small Intestine", "Spleen", "Stomach", "Testis", "Thyroid", "Uterus", "Vagina",
)  # fmt: skip
