"""Loss-landscape experiment tracker."""
