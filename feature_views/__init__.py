"""The data contract and the feature views, with one offline and one online engine."""
