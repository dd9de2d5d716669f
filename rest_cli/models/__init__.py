"""Policies: the kind interface and registry (base), model directories (modeldir), and each kind's
package (native)."""
